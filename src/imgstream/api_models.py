"""The JSON shapes of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from imgstream.config import Settings
from imgstream.jobs import JobRecord, JobStatus


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
    def for_job(cls, job_id: str, base_url: str) -> JobAccepted:
        return cls(id=job_id, status=JobStatus.QUEUED, links=job_links(job_id, base_url))


class ResultView(BaseModel):
    url: str
    width: int
    height: int
    format: str
    bytes: int


class JobView(BaseModel):
    id: str
    status: JobStatus
    operations: list[dict[str, Any]]
    format: str | None
    filename: str
    """The client's file name, for display only (it is never used as a path)."""
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: str | None
    """A message a person understands, when the job failed."""
    error_code: str | None
    result: ResultView | None
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
        )
    return JobView(
        id=record.id,
        status=record.status,
        operations=[step for step in operations if isinstance(step, dict)],
        format=record.format or None,
        filename=record.filename,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        error=record.error.message if record.error else None,
        error_code=record.error.code if record.error else None,
        result=result,
        links=links,
    )
