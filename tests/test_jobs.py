"""The wire format's pure codecs: stream entries and job hashes, without Redis."""

from __future__ import annotations

import re

import pytest

from imgstream.jobs import (
    JobRecord,
    ResultInfo,
    StreamEntry,
    WireError,
    is_valid_job_id,
    new_job_id,
    queued_job_fields,
    result_fields,
    stream_id_timestamp,
    utc_now,
)
from imgstream.lifecycle import JobStatus


def test_job_ids_are_uuid4_hex_and_distinct() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    for job_id in ids:
        assert is_valid_job_id(job_id)
        assert job_id[12] == "4"  # UUID version 4: 122 random bits


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "../../etc/passwd",
        "A" * 32,
        "0" * 31,
        "0" * 33,
        "0" * 31 + "\n",
        "g" * 32,
        "0" * 30 + "/.",
    ],
)
def test_invalid_job_ids(candidate: str) -> None:
    assert not is_valid_job_id(candidate)


def test_stream_entry_round_trip() -> None:
    entry = StreamEntry(job_id=new_job_id(), operations='[{"op":"grayscale"}]', format="png")
    assert StreamEntry.from_fields(entry.to_fields()) == entry
    without_format = StreamEntry(job_id=entry.job_id, operations=entry.operations)
    assert "format" not in without_format.to_fields()
    assert StreamEntry.from_fields(without_format.to_fields()) == without_format


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"job": "nope", "operations": "[]"},
        {"job": "a" * 32},
        {"job": "a" * 32, "operations": ""},
    ],
)
def test_malformed_stream_entries(fields: dict[str, str]) -> None:
    with pytest.raises(WireError):
        StreamEntry.from_fields(fields)


def test_job_record_from_queued_fields() -> None:
    entry = StreamEntry(job_id=new_job_id(), operations='[{"op":"blur"}]')
    fields = queued_job_fields(entry, created_at=utc_now(), filename="a.png", owner="")
    record = JobRecord.from_hash(entry.job_id, fields)
    assert record.status is JobStatus.QUEUED
    assert record.attempts == 0
    assert record.result is None and record.error is None
    assert record.filename == "a.png"


def test_job_record_done_and_failed() -> None:
    job_id = new_job_id()
    done = {"status": "done", "attempts": "1", **result_fields(ResultInfo(8, 6, "png", 99))}
    assert JobRecord.from_hash(job_id, done).result == ResultInfo(8, 6, "png", 99)
    failed = {"status": "failed", "error": "could not decode", "error_code": "decode_error"}
    record = JobRecord.from_hash(job_id, failed)
    assert record.error is not None and record.error.code == "decode_error"
    with pytest.raises(WireError):
        JobRecord.from_hash(job_id, {"status": "exploded"})


def test_timestamps_are_iso8601_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())
    assert stream_id_timestamp("1700000000123-0") == "2023-11-14T22:13:20.123Z"


def test_final_statuses() -> None:
    assert {status for status in JobStatus if status.is_final} == {JobStatus.DONE, JobStatus.FAILED}
