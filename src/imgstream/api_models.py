"""The JSON shapes of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from imgstream.batches import BatchCounts, BatchRecord
from imgstream.config import Settings
from imgstream.jobs import BatchStatus, JobRecord, JobStatus, OriginalInfo, Placeholder


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 413, 415, 422, 429, 503, 507)
}
"""Every status an ``/api`` route may answer with an error, for the OpenAPI schema."""


class LimitsView(BaseModel):
    """The operator's limits, so that a client (the web page) offers only what is accepted."""

    max_upload_bytes: int
    max_pixels: int
    max_dimension: int
    max_frames: int
    max_steps: int
    max_sigma: float
    batch_max_files: int
    batch_max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitsView:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


class Links(BaseModel):
    self: str
    result: str


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    links: Links

    @classmethod
    def for_job(
        cls, job_id: str, base_url: str, status: JobStatus = JobStatus.QUEUED
    ) -> JobAccepted:
        return cls(id=job_id, status=status, links=job_links(job_id, base_url))


class PlaceholderView(BaseModel):
    """What to show while the result loads; computed from a small copy of the result."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "blurhash": "LyHLh,2xw$X9qVWHjue?gMfkfQfk",
                    "thumbhash": "3wcGdZpyd3eAh4h4iHeHeICBCPh3",
                    "dominant_color": "#1818e6",
                }
            ]
        }
    )

    blurhash: str
    thumbhash: str
    """Base64 of the ThumbHash bytes."""
    dominant_color: str
    """``#rrggbb``."""


class ResultView(BaseModel):
    url: str
    width: int
    height: int
    format: str
    bytes: int
    placeholder: PlaceholderView | None = None


class OriginalView(BaseModel):
    """The upload as its header describes it (as displayed: after EXIF orientation)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"width": 4000, "height": 3000, "format": "jpeg", "has_alpha": False, "pages": 1}
            ]
        }
    )

    width: int
    height: int
    format: str
    has_alpha: bool
    pages: int


class JobView(BaseModel):
    id: str
    status: JobStatus
    operations: list[dict[str, Any]]
    format: str | None
    quality: int | None = None
    max_bytes: int | None = None
    strip: bool = True
    filename: str
    """The client's file name, for display only (it is never used as a path)."""
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: str | None
    """A message a person understands, when the job failed."""
    error_code: str | None
    original: OriginalView | None = None
    """Known from acceptance for jobs sent through the API (not for raw stream entries)."""
    result: ResultView | None
    cached: bool = False
    """True when the job was done at once from the result cache: its image and steps equal
    a finished job's, whose result it shares; no worker ran it."""
    links: Links


def job_links(job_id: str, base_url: str) -> Links:
    base = f"{base_url.rstrip('/')}/api/jobs/{job_id}"
    return Links(self=base, result=f"{base}/result")


def job_view(record: JobRecord, base_url: str) -> JobView:
    links = job_links(record.id, base_url)
    try:
        operations = json.loads(record.operations)
    except ValueError:
        operations = []
    if not isinstance(operations, list):
        operations = []
    result = None
    if record.result is not None:
        result = ResultView(
            url=links.result,
            width=record.result.width,
            height=record.result.height,
            format=record.result.format,
            bytes=record.result.bytes,
            placeholder=_placeholder(record.result.placeholder),
        )
    options = dict(record.options)
    return JobView(
        id=record.id,
        status=record.status,
        operations=[step for step in operations if isinstance(step, dict)],
        format=record.format or None,
        quality=_number(options.get("quality")),
        max_bytes=_number(options.get("max_bytes")),
        strip=_flag(options.get("strip")),
        filename=record.filename,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        error=record.error.message if record.error else None,
        error_code=record.error.code if record.error else None,
        cached=record.cached,
        original=_original(record.original),
        result=result,
        links=links,
    )


def _flag(text: str | None) -> bool:
    """``strip`` as the worker reads it (pydantic's words for true and false); else true."""
    try:
        return text is None or _BOOL.validate_python(text)
    except ValidationError:
        return True


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _placeholder(placeholder: Placeholder | None) -> PlaceholderView | None:
    if placeholder is None:
        return None
    return PlaceholderView(
        blurhash=placeholder.blurhash,
        thumbhash=placeholder.thumbhash,
        dominant_color=placeholder.dominant_color,
    )


def _original(original: OriginalInfo | None) -> OriginalView | None:
    if original is None:
        return None
    return OriginalView(
        width=original.width,
        height=original.height,
        format=original.format,
        has_alpha=original.has_alpha,
        pages=original.pages,
    )


class BatchLinks(BaseModel):
    self: str
    events: str
    result: str
    """The ZIP of the finished results."""


class BatchAccepted(BaseModel):
    id: str
    status: BatchStatus
    jobs: list[JobAccepted]
    """One per image, in the order sent."""
    links: BatchLinks


class BatchCountsView(BaseModel):
    queued: int
    processing: int
    done: int
    failed: int
    expired: int
    """Jobs that ended and are no longer kept (their result TTL passed)."""


class BatchSummary(BaseModel):
    """A batch without its jobs: what each ``batch`` event of its stream carries."""

    id: str
    status: BatchStatus
    created_at: str
    total: int
    counts: BatchCountsView


class BatchView(BatchSummary):
    jobs: list[JobView]
    """Every job still kept, in the order the images were sent."""
    links: BatchLinks


def batch_links(batch_id: str, base_url: str) -> BatchLinks:
    base = f"{base_url.rstrip('/')}/api/batches/{batch_id}"
    return BatchLinks(self=base, events=f"{base}/events", result=f"{base}/result")


def batch_summary(batch: BatchRecord, jobs: list[JobRecord | None]) -> BatchSummary:
    counts = BatchCounts.of(jobs)
    return BatchSummary(
        id=batch.id,
        status=counts.status,
        created_at=batch.created_at,
        total=len(batch.job_ids),
        counts=BatchCountsView(**asdict(counts)),
    )


def batch_view(batch: BatchRecord, jobs: list[JobRecord | None], base_url: str) -> BatchView:
    return BatchView(
        **dict(batch_summary(batch, jobs)),
        jobs=[job_view(job, base_url) for job in jobs if job is not None],
        links=batch_links(batch.id, base_url),
    )
