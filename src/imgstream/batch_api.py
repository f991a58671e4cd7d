"""HTTP routes of batches: accept one, report it, stream its events and its results as a ZIP.
``install`` adds them to the app with one call from ``create_app``.

A batch is readable only by the key that made it (another key's batch is reported missing,
as jobs are), and lives as long as its jobs: each read moves its expiry to that of its
last job (``IMGSTREAM_RESULT_TTL`` after the last one ended), and a batch whose jobs have
all expired is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from imgstream import upload_form
from imgstream.api_models import (
    ERROR_RESPONSES,
    BatchAccepted,
    BatchView,
    batch_summary,
    batch_view,
    job_view,
)
from imgstream.auth import Caller, caller
from imgstream.batch_archive import Member, first_piece, unique_names, zip_stream
from imgstream.batch_intake import accept_batch, batch_store
from imgstream.batches import BatchCounts, BatchRecord, seconds_to_keep
from imgstream.errors import ApiError
from imgstream.intake import with_form
from imgstream.job_changes import TooManyStreams
from imgstream.jobs import JobRecord, JobStatus, is_valid_job_id
from imgstream.operations import Limits, OutputFormat
from imgstream.ratelimit import client_identity
from imgstream.result_download import download_name
from imgstream.services import Services, services_of
from imgstream.sse import EventStreamResponse, StatusView, batch_events, stream_refused
from imgstream.storage import Chunks

BATCHES_PATH = "/api/batches"

router = APIRouter()


def install(app: FastAPI, limits: Limits, max_files: int) -> None:
    app.post(
        BATCHES_PATH,
        status_code=202,
        response_model=BatchAccepted,
        responses=ERROR_RESPONSES,
        summary="Upload several images with one set of steps: a job per image",
        description=(
            "The form of `POST /api/jobs` with one or more `image` parts (at most "
            "`IMGSTREAM_BATCH_MAX_FILES`). All or nothing: one bad image refuses the batch."
        ),
        openapi_extra={"requestBody": upload_form.batch_form_schema(limits, max_files)},
    )(create_batch)
    app.include_router(router)


async def create_batch(request: Request, who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
    # One more than the limit is spooled, so that the limit's own message refuses it.
    max_files = services_of(request).settings.batch_max_files + 1
    return await with_form(request, who, max_files, accept_batch)


@router.get(
    BATCHES_PATH + "/{batch_id}",
    response_model=BatchView,
    responses=ERROR_RESPONSES,
    summary="Batch status: its state, counts per job status, and its jobs",
)
async def get_batch(
    request: Request, batch_id: str, who: Annotated[Caller, Depends(caller)]
) -> BatchView:
    services = services_of(request)
    batch, jobs = await find_batch(services, batch_id, who)
    return batch_view(batch, jobs, services.settings.public_url)


@router.get(
    BATCHES_PATH + "/{batch_id}/result",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **ERROR_RESPONSES},
    summary="The finished results as one ZIP (streamed)",
    description=(
        "Once every job has ended: a ZIP of the `done` jobs' results, named after the "
        "uploaded files (unique, stable), in upload order. `409` while the batch is "
        "processing or when no job succeeded."
    ),
)
async def get_batch_result(
    request: Request, batch_id: str, who: Annotated[Caller, Depends(caller)]
) -> Response:
    services = services_of(request)
    batch, jobs = await find_batch(services, batch_id, who)
    counts = BatchCounts.of(jobs)
    if not counts.status.is_final:
        ended = counts.done + counts.failed + counts.expired
        raise ApiError(
            409,
            "not_ready",
            f"the batch is processing ({ended} of {len(jobs)} jobs ended); no result yet",
        )
    members = archive_members(services, jobs)
    if not members:
        raise ApiError(409, "batch_failed", "no job of the batch has a result to download")
    chunks = members[0].read()
    first = await first_piece(chunks)  # a store that is down: a 503, before any byte
    return StreamingResponse(
        zip_stream(members, (chunks, first)),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="batch-{batch.id}.zip"',
            "Cache-Control": "private, no-cache",
        },
    )


@router.get(
    BATCHES_PATH + "/{batch_id}/events",
    response_class=StreamingResponse,  # the subclass's signature confuses the schema
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    summary="Live batch status (Server-Sent Events)",
    description=(
        "A `job` event for each job (as `GET /api/jobs/{id}` shows it) and a `batch` event "
        "(the batch without its jobs) at once; then a `job` event for each change, followed "
        "by the new `batch` summary; the stream ends with an `end` event (the final summary) "
        "once every job has ended. One stream against `IMGSTREAM_MAX_STREAMS_PER_CLIENT`."
    ),
)
async def batch_events_stream(
    request: Request, batch_id: str, who: Annotated[Caller, Depends(caller)]
) -> Response:
    services = services_of(request)
    batch, _ = await find_batch(services, batch_id, who)
    client = client_identity(request.scope, request.app.state.keyring)
    try:
        follower = await services.hub.follow_batch(batch.job_ids, client)
    except TooManyStreams as exc:
        raise stream_refused(exc) from None
    try:  # read after subscribing, so that no change falls between the two
        jobs = dict(zip(batch.job_ids, await services.queue.get_jobs(batch.job_ids), strict=True))
    except BaseException:
        await follower.aclose()
        raise
    base = services.settings.public_url

    def job_snapshot(record: JobRecord) -> str:
        return job_view(record, base).model_dump_json()

    def summary(records: list[JobRecord | None]) -> StatusView:
        view = batch_summary(batch, records)
        return StatusView(data=view.model_dump_json(), final=view.status.is_final)

    keepalive = services.settings.sse_keepalive
    events = batch_events(jobs, follower, job_snapshot, summary, keepalive)
    return EventStreamResponse(events, on_close=follower.aclose)


def archive_members(services: Services, jobs: list[JobRecord | None]) -> list[Member]:
    """The done jobs' results, in upload order, under unique names."""
    done = [job for job in jobs if job is not None and job.status is JobStatus.DONE and job.result]
    names = []
    for job in done:
        assert job.result is not None
        names.append(download_name(job.filename, job.id, OutputFormat(job.result.format).extension))
    members = []
    for job, name in zip(done, unique_names(names), strict=True):
        assert job.result is not None
        extension = OutputFormat(job.result.format).extension
        members.append(
            Member(
                name=name,
                size=job.result.bytes,
                modified=_moment(job.finished_at),
                read=_reader(services, job.result.stored_name(job.id), extension),
            )
        )
    return members


def _reader(services: Services, name: str, extension: str) -> Callable[[], Chunks]:
    return partial(services.storage.read_result, name, extension)


def _moment(timestamp: str | None) -> datetime:
    return datetime.fromisoformat(timestamp) if timestamp else datetime.now(UTC)


async def find_batch(
    services: Services, batch_id: str, who: Caller
) -> tuple[BatchRecord, list[JobRecord | None]]:
    """The batch and its jobs (None for those expired), if it exists and is the caller's;
    another key's batch is reported missing. Moves its expiry to its last job's."""
    if not is_valid_job_id(batch_id):
        raise ApiError(404, "not_found", "no such batch")
    batches = batch_store(services)
    batch = await batches.get(batch_id)
    if batch is None or not who.may_see(batch.owner):
        raise ApiError(404, "not_found", "no such batch (unknown, or expired)")
    jobs = await services.queue.get_jobs(batch.job_ids)
    if all(job is None for job in jobs):
        await batches.delete(batch_id)
        raise ApiError(404, "not_found", "no such batch (its jobs expired)")
    ttl = seconds_to_keep(jobs, services.settings.result_ttl, time.time())
    await batches.keep_for(batch_id, ttl)
    return batch, jobs
