"""The S3 backend against a real S3 server (SeaweedFS, SigV4 enforced): the key layout, the
round trips, multipart uploads, ranges, presigned URLs, retention on the bucket, and the
clear errors for a missing bucket, refused keys or an unreachable endpoint."""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from imgstream import cli, commands, imaging
from imgstream.config import Settings
from imgstream.deployment import open_storage
from imgstream.janitor import Janitor
from imgstream.jobs import ResultInfo, new_job_id
from imgstream.lifecycle import JobStatus
from imgstream.operations import Limits
from imgstream.queue import JobQueue
from imgstream.redis_server import free_port
from imgstream.s3_storage import S3Storage
from imgstream.setting_values import MIB
from imgstream.storage import StorageUnavailable, spooled_source
from imgstream.worker import Worker
from seaweed import SeaweedS3, keys_in

from inprocess import store_and_enqueue
from service import PNG


def read_all(storage: S3Storage, job_id: str, extension: str) -> bytes:
    stored = storage.find_result(job_id, extension)
    assert stored is not None and stored.open is not None
    return b"".join(stored.open(None))


def test_round_trip_under_the_prefix(s3_settings: Settings, seaweed: SeaweedS3) -> None:
    storage = open_storage(s3_settings)
    assert isinstance(storage, S3Storage)
    storage.check()
    job_id = new_job_id()
    upload = io.BytesIO(b"skip" + b"original bytes")
    upload.seek(4)  # saved from where the stream stands, as the API hands it over
    assert storage.save_original(job_id, upload) == len(b"original bytes")
    assert storage.original_source(job_id) == b"original bytes"
    storage.save_result(job_id, b"result bytes", "jpg")
    assert keys_in(seaweed, s3_settings.s3_bucket) == [
        f"fleet/originals/{job_id}",
        f"fleet/results/{job_id}.jpg",
    ]
    head = seaweed.client().head_object(
        Bucket=s3_settings.s3_bucket, Key=f"fleet/results/{job_id}.jpg"
    )
    assert head["ContentType"] == "image/jpeg"
    assert read_all(storage, job_id, "jpg") == b"result bytes"
    stored = storage.find_result(job_id, "jpg")
    assert stored is not None and stored.size == 12 and stored.open is not None
    assert b"".join(stored.open((2, 5))) == b"sult"
    assert storage.find_result(job_id, "png") is None
    storage.delete(job_id)
    assert keys_in(seaweed, s3_settings.s3_bucket) == []
    with pytest.raises(FileNotFoundError):
        storage.original_source(job_id)


def test_a_large_upload_goes_in_parts(s3_settings: Settings, seaweed: SeaweedS3) -> None:
    settings = s3_settings.model_copy(
        update={"s3_multipart_threshold": 5 * MIB, "s3_part_bytes": 5 * MIB}
    )
    storage = S3Storage(settings)
    body = os.urandom(11 * MIB)
    job_id = new_job_id()
    assert storage.save_original(job_id, io.BytesIO(body)) == len(body)
    head = seaweed.client().head_object(Bucket=settings.s3_bucket, Key=f"fleet/originals/{job_id}")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag: "<md5>-<parts>"
    assert storage.original_source(job_id) == body
    small = new_job_id()
    storage.save_original(small, io.BytesIO(b"x" * 1024))
    head = seaweed.client().head_object(Bucket=settings.s3_bucket, Key=f"fleet/originals/{small}")
    assert "-" not in head["ETag"]


def test_presigned_url_serves_the_result(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings.model_copy(update={"s3_presign": True, "s3_presign_ttl": 60}))
    job_id = new_job_id()
    storage.save_result(job_id, b"signed result", "webp")
    stored = storage.find_result(job_id, "webp")
    assert stored is not None and stored.url is not None and stored.size == 13
    assert "X-Amz-Signature=" in stored.url and "X-Amz-Expires=60" in stored.url
    response = httpx.get(stored.url)
    assert response.status_code == 200 and response.content == b"signed result"
    tampered = stored.url.replace(job_id, new_job_id())
    assert httpx.get(tampered).status_code == 403


def test_missing_bucket_is_said_clearly(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings.model_copy(update={"s3_bucket": "no-such-bucket-here"}))
    with pytest.raises(StorageUnavailable, match="'no-such-bucket-here' does not exist"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="does not exist"):
        storage.original_source(new_job_id())  # (SeaweedFS makes a bucket on a PUT)


def test_refused_credentials_are_said_clearly(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    storage = S3Storage(s3_settings)
    with pytest.raises(StorageUnavailable, match="refused the credentials"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="refused the credentials"):
        storage.save_original(new_job_id(), io.BytesIO(b"x"))


def test_unreachable_endpoint_is_storage_unavailable(s3_settings: Settings) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = S3Storage(
        s3_settings.model_copy(update={"s3_endpoint_url": closed, "s3_timeout": 2.0})
    )
    with pytest.raises(StorageUnavailable, match="unavailable"):
        storage.check()
    with pytest.raises(StorageUnavailable):
        storage.original_source(new_job_id())


def test_scan_counts_objects_and_aborts_abandoned_uploads(
    s3_settings: Settings, seaweed: SeaweedS3
) -> None:
    storage = S3Storage(s3_settings)
    job_id = new_job_id()
    storage.save_original(job_id, io.BytesIO(b"12345"))
    storage.save_result(job_id, b"123", "png")
    seaweed.client().put_object(Bucket=s3_settings.s3_bucket, Key="fleet/originals/notes.txt")
    abandoned = seaweed.client().create_multipart_upload(
        Bucket=s3_settings.s3_bucket, Key=f"fleet/originals/{new_job_id()}"
    )
    fresh = storage.scan(temporary_age=3600, orphan_age=3600)
    assert fresh.usage["originals"] == 1 and fresh.usage["originals_bytes"] == 5
    assert fresh.usage["results"] == 1 and fresh.usage["results_bytes"] == 3
    assert fresh.usage["temporary"] == 1 and fresh.old == {}
    aged = storage.scan(temporary_age=-1, orphan_age=-1)  # every object counts as old
    assert aged.temporaries_removed == 1
    assert sorted(found.kind for found in aged.old[job_id]) == ["originals", "results"]
    uploads = seaweed.client().list_multipart_uploads(Bucket=s3_settings.s3_bucket)
    assert abandoned["UploadId"] not in [u["UploadId"] for u in uploads.get("Uploads", [])]
    assert storage.remove_files(aged.old[job_id]) == (2, 8)
    assert keys_in(seaweed, s3_settings.s3_bucket) == ["fleet/originals/notes.txt"]


@pytest.mark.anyio
async def test_janitor_removes_expired_and_orphaned_objects(
    s3_settings: Settings, seaweed: SeaweedS3, redis: Redis, queue: JobQueue
) -> None:
    storage = S3Storage(s3_settings)
    expired = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', b"original")
    [delivery] = await queue.read("c", count=1, block_ms=10)
    await queue.start(delivery, "lease", "c", 3)
    storage.save_result(expired, b"result", "png")
    await queue.complete(delivery, "lease", ResultInfo(1, 1, "png", 6), ttl=60)
    live = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', b"queued")
    orphan = new_job_id()  # stored, never queued: a crash between the two
    storage.save_original(orphan, io.BytesIO(b"lost"))
    assert await redis.pexpireat(queue.keys.job(expired), 1)  # its TTL run out, now
    await redis.zadd(queue.keys.expiry, {expired: 0})
    # Every object counts as old: the live job's original stays because its job exists.
    janitor = Janitor(redis, queue.keys, storage, temporary_age=3600, orphan_age=-1)
    sweep = await janitor.sweep()
    assert sweep is not None
    assert sweep.expired_jobs == 1 and sweep.orphans == 1
    assert keys_in(seaweed, s3_settings.s3_bucket) == [f"fleet/originals/{live}"]
    assert sweep.storage.originals == 1 and sweep.storage.originals_bytes == len(b"queued")


def test_the_probe_reads_the_upload_in_place(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings)
    job_id = new_job_id()
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as upload:  # as the form spools
        upload.write(PNG)
        upload.seek(0)
        storage.save_original(job_id, upload)  # s3transfer must not close it
        source = spooled_source(upload)
        assert isinstance(source, Path) and source.read_bytes() == PNG  # no second transfer
        assert imaging.probe(source, Limits()).width == 32
    assert storage.original_source(job_id) == PNG


def test_s3_without_a_bucket_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMGSTREAM_STORAGE", "s3")
    monkeypatch.delenv("IMGSTREAM_S3_BUCKET", raising=False)
    assert cli.main(["gc"]) == 2
    assert "IMGSTREAM_STORAGE=s3 needs IMGSTREAM_S3_BUCKET" in capsys.readouterr().err


class SetOnLog(logging.Handler):
    """Sets ``event`` when a log line containing ``text`` is emitted (in the event loop)."""

    def __init__(self, text: str, event: anyio.Event) -> None:
        super().__init__()
        self.text, self.event = text, event

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@pytest.mark.anyio
async def test_a_worker_waits_out_a_store_outage_without_spending_attempts(
    s3_settings: Settings, queue: JobQueue, tmp_path: Path
) -> None:
    with SeaweedS3(tmp_path / "own-s3") as own:
        settings = s3_settings.model_copy(
            update={"s3_endpoint_url": own.endpoint, "s3_bucket": own.new_bucket()}
        )
        storage = S3Storage(settings)
        job_id = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', PNG)
        own.stop()
        waiting = anyio.Event()
        handler = SetOnLog("the job is kept", waiting)
        logging.getLogger("imgstream").addHandler(handler)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(partial(Worker(settings, queue, storage).run, burst=True))
                with anyio.fail_after(120):
                    await waiting.wait()  # the worker met the outage and keeps the job
                record = await queue.get_job(job_id)
                assert record is not None and record.status is JobStatus.PROCESSING
                own.start()  # the same port and data: the store is back
        finally:
            logging.getLogger("imgstream").removeHandler(handler)
        record = await queue.get_job(job_id)
        assert record is not None and record.status is JobStatus.DONE, record
        assert record.attempts == 1
        assert storage.find_result(job_id, "png") is not None


def test_gc_on_a_missing_bucket_says_so(
    s3_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = s3_settings.model_copy(update={"s3_bucket": "gone-bucket-name"})
    assert commands.gc(settings, argparse.Namespace()) == 1
    assert "the bucket 'gone-bucket-name' does not exist" in capsys.readouterr().err


def test_gc_sweeps_the_bucket(s3_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    storage = S3Storage(s3_settings)
    storage.save_original(new_job_id(), io.BytesIO(b"kept: younger than the orphan age"))
    assert commands.gc(s3_settings, argparse.Namespace()) == 0
    assert "stored now: 1 originals (33 bytes)" in capsys.readouterr().out
