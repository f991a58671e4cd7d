"""The job record and the stream entry as they travel through Redis: typed, with pure codecs.

This module is the wire format documented in ``docs/wire-format.md``; a program in another
language that follows that document interoperates with this code. Nothing here talks to
Redis: ``queue`` moves these values, this module only gives them shape and meaning.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

from imgstream.keys import MAX_PARTITIONS, PARTITION_VERSION_NIBBLE
from imgstream.output import OUTPUT_FIELDS
from imgstream.steps import OPERATION_NAMES, OPERATION_WEIGHTS

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
MAX_FILENAME_CHARS = 255


class JobStatus(StrEnum):
    """A job's lifecycle: ``queued`` → ``processing`` → ``done`` or ``failed``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


FINAL_STATUSES = tuple(status for status in JobStatus if status.is_final)
"""The statuses a job ends in, in the order the scripts receive them (done, failed)."""


class BatchStatus(StrEnum):
    """A batch's state, from its jobs': ``processing`` while any has not ended, then
    ``done`` (every job done), ``failed`` (every job failed) or ``partial`` (some of each)."""

    PROCESSING = "processing"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not BatchStatus.PROCESSING


class Enqueued(IntEnum):
    """What ``lua/enqueue.lua`` answers first: the job was accepted, or why not."""

    ACCEPTED = 1
    BACKLOG_FULL = 0
    JOB_EXISTS = -1
    REPLAYED = 2
    """The idempotency key names a job already: nothing was created; its id and request
    fingerprint come back."""


class StartRefused(IntEnum):
    """What ``lua/start.lua`` answers instead of an attempt number (which is 1 or more)."""

    ALREADY_ENDED = -1
    """A duplicate delivery of a job that has ended: discard the entry."""
    EXHAUSTED = -2
    """Started max-attempts times without ending (a poison entry): bury it."""


class Recorded(IntEnum):
    """What ``lua/finish.lua`` answers."""

    RECORDED = 1
    LEASE_LOST = 0
    """The lease was taken over, or the job had already ended: nothing was written."""


class Pinned(IntEnum):
    """What ``lua/pin.lua`` answers first."""

    PINNED = 1
    """The job is recorded as a user of the shared file (and the cache entry follows)."""
    REFUSED = 0
    """The janitor is deleting the file, or (a cache lookup) no entry: store per job."""


class WireError(ValueError):
    """A stream entry or job hash that does not follow the documented wire format."""


def new_job_id(partition: int | None = None) -> str:
    """A fresh job id as 32 lowercase hex digits: a UUID4 (122 random bits, unguessable), or,
    for ``partition``, a UUIDv8 whose first 4 digits name the partition (``keys.partition_of``;
    106 random bits remain)."""
    random_id = uuid.uuid4().hex
    if partition is None:
        return random_id
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} is out of range")
    return f"{partition:04x}{random_id[4:12]}{PARTITION_VERSION_NIBBLE}{random_id[13:]}"


def lane_of(operations_json: str) -> str:
    """The lane (operation) a chain is queued in when streams are per operation: its heaviest
    step by ``OPERATION_WEIGHTS``, ties to the name first in alphabetical order. A chain whose
    steps cannot be read goes to the lane of ``OPERATION_NAMES[0]`` (a worker finds it
    malformed there and fails it)."""
    try:
        steps = json.loads(operations_json)
        names = {str(step["op"]) for step in steps if step["op"] in OPERATION_WEIGHTS}
    except (ValueError, TypeError, KeyError):
        names = set()
    if not names:
        return OPERATION_NAMES[0]
    return min(names, key=lambda name: (-OPERATION_WEIGHTS[name], name))


def is_valid_job_id(value: str) -> bool:
    """True for ids of the documented shape; anything else never reaches Redis or a path."""
    return bool(JOB_ID_PATTERN.fullmatch(value))


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds, the timestamp format of every job field."""
    return format_timestamp(datetime.now(UTC))


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """A job field's timestamp (``format_timestamp``'s) read back, aware, in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


def entry_id_ms(entry_id: str) -> int:
    """The Unix time in ms Redis stamped into an auto-generated stream entry id
    (``<ms>-<seq>``): when the entry was added."""
    return int(entry_id.split("-", 1)[0])


def stream_id_timestamp(entry_id: str) -> str:
    """``entry_id_ms`` as a job timestamp."""
    return format_timestamp(datetime.fromtimestamp(entry_id_ms(entry_id) / 1000, UTC))


SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ORIGINAL_SHA256_FIELD = "original_sha256"
"""The stream entry's (and job hash's) field holding the original's SHA-256."""
ORIGINAL_NAME_FIELD = "original_name"
"""The stream entry's (and job hash's) field naming a shared original (its SHA-256)."""
FROM_CACHE_FIELD = "cached"
"""Set ("1") in the hash of a job done at once from the result cache: no worker ran it."""


def is_shared_name(value: str) -> bool:
    """True for the name of a shared file: a SHA-256 (an original) or a content key (a
    result), 64 lowercase hex digits."""
    return bool(SHA256_PATTERN.fullmatch(value))


def is_stored_name(value: str) -> bool:
    """True for a name files are stored under: a job id, or a shared file's name."""
    return is_valid_job_id(value) or is_shared_name(value)


ENTRY_OUTPUT_FIELDS = tuple(name for name in OUTPUT_FIELDS if name != "format")
"""Output options a stream entry may carry besides ``format``; absent: the default."""


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One unit of work in the jobs stream: which job, which steps, how to encode."""

    job_id: str
    operations: str
    """The steps as a JSON list, exactly as ``operations.parse_operations_json`` reads them."""
    format: str = ""
    """An output format name (``jpeg``, ``png``, ``webp``, ``avif``, ``gif``, ``tiff``), or
    empty to follow the input's format."""
    options: tuple[tuple[str, str], ...] = ()
    """The other output options present (``ENTRY_OUTPUT_FIELDS``), as text, in that order."""
    original_sha256: str = ""
    """SHA-256 (64 lowercase hex digits) of the original's bytes, when the producer knows it
    (the API always does); empty: the worker hashes the original itself."""
    original_name: str = ""
    """The name the original is stored under when it is shared (``originals/<its SHA-256>``);
    empty: ``originals/<job id>``."""

    @property
    def original(self) -> str:
        """The name the original is stored under."""
        return self.original_name or self.job_id

    def output(self) -> dict[str, str]:
        """Every output option given, ``format`` included, by field name."""
        return {**({"format": self.format} if self.format else {}), **dict(self.options)}

    def source_fields(self) -> dict[str, str]:
        """The original's hash and shared name, those given (kept in the job hash too)."""
        given = {
            ORIGINAL_SHA256_FIELD: self.original_sha256,
            ORIGINAL_NAME_FIELD: self.original_name,
        }
        return {name: value for name, value in given.items() if value}

    def to_fields(self) -> dict[str, str]:
        return {
            "job": self.job_id,
            "operations": self.operations,
            **self.output(),
            **self.source_fields(),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> StreamEntry:
        job_id = fields.get("job", "")
        if not is_valid_job_id(job_id):
            raise WireError("stream entry has no valid 'job' field (32 lowercase hex digits)")
        operations = fields.get("operations")
        if not operations:
            raise WireError("stream entry has no 'operations' field")
        digest = fields.get(ORIGINAL_SHA256_FIELD, "")
        name = fields.get(ORIGINAL_NAME_FIELD, "")
        if name and not is_shared_name(name):
            raise WireError(
                f"stream entry's {ORIGINAL_NAME_FIELD!r} is not 64 lowercase hex digits"
            )
        return cls(
            job_id=job_id,
            operations=operations,
            format=fields.get("format", ""),
            options=_options(fields),
            original_sha256=digest if is_shared_name(digest) else "",
            original_name=name,
        )


def _options(fields: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, fields[name]) for name in ENTRY_OUTPUT_FIELDS if fields.get(name))


@dataclass(frozen=True, slots=True)
class OriginalInfo:
    """What the upload is, from its header: known from the moment the job is accepted."""

    width: int
    height: int
    format: str
    has_alpha: bool
    pages: int

    def to_fields(self) -> dict[str, str]:
        return {
            "original_width": str(self.width),
            "original_height": str(self.height),
            "original_format": self.format,
            "original_has_alpha": "1" if self.has_alpha else "0",
            "original_pages": str(self.pages),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> OriginalInfo | None:
        if "original_width" not in fields:
            return None
        return cls(
            width=int(fields["original_width"]),
            height=int(fields["original_height"]),
            format=fields.get("original_format", ""),
            has_alpha=fields.get("original_has_alpha") == "1",
            pages=int(fields.get("original_pages") or 1),
        )


@dataclass(frozen=True, slots=True)
class Placeholder:
    """What a client can show before the result arrives, computed from a small copy of it."""

    blurhash: str
    thumbhash: str
    """Base64 (standard alphabet, padded) of the ThumbHash bytes."""
    dominant_color: str
    """``#rrggbb``."""


@dataclass(frozen=True, slots=True)
class ResultInfo:
    width: int
    height: int
    format: str
    bytes: int
    placeholder: Placeholder | None = None
    content_key: str = ""
    """What the result is made of (``content``): its ``ETag``; empty for results stored
    before imgstream recorded it."""
    name: str = ""
    """The name it is stored under when shared (its content key); empty: the job's id."""

    def stored_name(self, job_id: str) -> str:
        """The name the result of job ``job_id`` is stored under: its content key when it
        is shared (a cached result), else the job's id."""
        return self.name or job_id


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's state as kept in its Redis hash, decoded."""

    id: str
    status: JobStatus
    operations: str
    format: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: JobError | None
    result: ResultInfo | None
    filename: str
    owner: str
    original: OriginalInfo | None = None
    options: tuple[tuple[str, str], ...] = ()
    """The output options besides ``format`` that the job gave (``ENTRY_OUTPUT_FIELDS``)."""
    callback_url: str = ""
    """Where the job's final status is POSTed when it ends (a webhook); empty: nowhere."""
    cached: bool = False
    """Done at once from the result cache (``FROM_CACHE_FIELD``), not by a worker."""

    @classmethod
    def from_hash(cls, job_id: str, fields: Mapping[str, str]) -> JobRecord:
        try:
            status = JobStatus(fields.get("status", JobStatus.QUEUED))
        except ValueError:
            raise WireError(
                f"job {job_id} has an unknown status {fields.get('status')!r}"
            ) from None
        result = result_of(fields) if status is JobStatus.DONE else None
        error = None
        if fields.get("error"):
            error = JobError(code=fields.get("error_code") or "failed", message=fields["error"])
        return cls(
            id=job_id,
            status=status,
            operations=fields.get("operations", "[]"),
            format=fields.get("format", ""),
            created_at=fields.get("created_at") or None,
            started_at=fields.get("started_at") or None,
            finished_at=fields.get("finished_at") or None,
            attempts=int(fields.get("attempts") or 0),
            error=error,
            result=result,
            filename=fields.get("filename", ""),
            owner=fields.get("owner", ""),
            original=OriginalInfo.from_fields(fields),
            options=_options(fields),
            callback_url=fields.get("callback_url", ""),
            cached=fields.get(FROM_CACHE_FIELD) == "1",
        )


def result_of(fields: Mapping[str, str]) -> ResultInfo | None:
    """The result ``result_fields`` wrote into ``fields`` (a job hash, a cache entry)."""
    if "result_format" not in fields:
        return None
    return ResultInfo(
        width=int(fields["result_width"]),
        height=int(fields["result_height"]),
        format=fields["result_format"],
        bytes=int(fields["result_bytes"]),
        placeholder=_placeholder(fields),
        content_key=fields.get("content_key", ""),
        name=fields.get("result_name", ""),
    )


def _placeholder(fields: Mapping[str, str]) -> Placeholder | None:
    if "placeholder_blurhash" not in fields:
        return None
    return Placeholder(
        blurhash=fields["placeholder_blurhash"],
        thumbhash=fields.get("placeholder_thumbhash", ""),
        dominant_color=fields.get("placeholder_color", ""),
    )


def queued_state(entry: StreamEntry) -> dict[str, str]:
    """The hash fields every queued job holds, whoever queued it (the API, a producer that
    only added the stream entry, a dead-letter retry): status, steps, output, no attempts."""
    return {
        "status": JobStatus.QUEUED.value,
        "operations": entry.operations,
        "format": entry.format,
        "attempts": "0",
        **dict(entry.options),
        **entry.source_fields(),
    }


def queued_job_fields(
    entry: StreamEntry, *, created_at: str, filename: str, owner: str
) -> dict[str, str]:
    """The hash fields of a job the API accepted, before any worker has seen it."""
    return {
        **queued_state(entry),
        "created_at": created_at,
        "filename": filename[:MAX_FILENAME_CHARS],
        "owner": owner,
    }


def pairs(fields: Mapping[str, str]) -> list[str]:
    """``fields`` flattened to name, value, name, value… as scripts ``unpack`` them."""
    return [item for pair in fields.items() for item in pair]


def result_fields(result: ResultInfo) -> dict[str, str]:
    fields = {
        "result_width": str(result.width),
        "result_height": str(result.height),
        "result_format": result.format,
        "result_bytes": str(result.bytes),
    }
    if result.content_key:
        fields["content_key"] = result.content_key
    if result.name:
        fields["result_name"] = result.name
    if result.placeholder is not None:
        fields.update(
            placeholder_blurhash=result.placeholder.blurhash,
            placeholder_thumbhash=result.placeholder.thumbhash,
            placeholder_color=result.placeholder.dominant_color,
        )
    return fields
