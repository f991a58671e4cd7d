"""Taking a batch in: several images, one set of steps, each image an ordinary job.

Promises: all or nothing at acceptance. Every image is stored and checked (format, limits,
geometry) before any job is queued, so one bad part refuses the whole batch (its error
names the part) and leaves nothing behind. A ``202`` is sent only once every job is queued.
The backlog is checked once for the whole batch (``IMGSTREAM_MAX_BACKLOG``; a batch may pass
it by at most its own size when others are accepted at the same moment). If Redis fails
while the jobs are being queued, the batch is not made (the request fails, its key is
released) and the jobs queued until then run as ordinary jobs.

An ``Idempotency-Key`` works as on ``POST /api/jobs``: within ``IMGSTREAM_IDEMPOTENCY_TTL``
the same key and request answer the batch first made, a different request ``409
idempotency_conflict``; the key is claimed before the batch is made, so two concurrent
retries make one batch (the later one is told ``409 idempotency_in_progress`` while the
first is still being accepted).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from imgstream.api_models import BatchAccepted, JobAccepted, batch_links
from imgstream.auth import Caller
from imgstream.batch_queue import BatchStore
from imgstream.batches import BatchCounts, BatchRecord
from imgstream.errors import RETRY_AFTER_MOMENT, ApiError, retry_after
from imgstream.idempotency import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    idempotency_scope,
    request_fingerprint,
)
from imgstream.intake import CALLBACK_FIELD, Stored, checked_callback, checked_form, enqueue, store
from imgstream.jobs import JobRecord, new_job_id, utc_now
from imgstream.lifecycle import BatchStatus
from imgstream.producer import BacklogFull, ReplicationLagging
from imgstream.ratelimit import take_more
from imgstream.services import Services, services_of
from imgstream.upload_form import FormError, HashedUpload, TooManyFiles, split_form
from imgstream.upload_refusals import backlog_full, discard

log = logging.getLogger("imgstream.api")


@dataclass(frozen=True, slots=True)
class BatchUpload:
    images: list[HashedUpload]
    """In the order sent: the batch's jobs keep it."""
    fields: dict[str, str]
    """As ``Upload.fields``: one set of steps and output options for every image."""


def read_batch_upload(form: FormData, max_files: int) -> BatchUpload:
    """The images (``image`` parts, one or more) and the text fields of a batch upload."""
    images, fields = split_form(form)
    if len(images) > max_files:
        raise TooManyFiles(
            f"image: {len(images)} files, more than the {max_files} a batch may hold "
            "(IMGSTREAM_BATCH_MAX_FILES)"
        )
    return BatchUpload(images=images, fields=fields)


def batch_store(services: Services) -> BatchStore:
    return BatchStore(services.deployment.redis, services.deployment.keys)


async def accept_batch(request: Request, who: Caller, form: FormData) -> JSONResponse:
    """Validate the form and every image, store them, queue a job per image: a 202 only
    once all are queued."""
    services = services_of(request)
    settings = services.settings
    scope = idempotency_scope(request)
    try:
        upload = read_batch_upload(form, settings.batch_max_files)
    except TooManyFiles as exc:
        raise ApiError(413, "too_many_files", str(exc)) from None
    except FormError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    callback_url = await checked_callback(services, upload.fields.pop(CALLBACK_FIELD, ""))
    spec = checked_form(services, upload.fields)
    await _draw_tokens(request, len(upload.images))
    batches = batch_store(services)
    fingerprint = ""
    if scope is not None:
        digests = [image.sha256 for image in upload.images]  # hashed as they streamed in
        images = hashlib.sha256(",".join(digests).encode()).hexdigest()
        fingerprint = request_fingerprint(images, spec, {CALLBACK_FIELD: callback_url})
        prior = await batches.find_once(scope)
        if prior is not None:
            return await _replay(services, batches, prior, fingerprint, who)
    single = bool(upload.fields.get("operation", "").strip())
    stored: list[Stored] = []
    try:
        for position, image in enumerate(upload.images, start=1):
            try:
                stored.append(await store(services, image, spec, single=single))
            except ApiError as exc:
                name = image.filename or "unnamed"
                raise ApiError(
                    exc.status, exc.code, f"image {position} ({name}): {exc.message}", exc.headers
                ) from None
        await _check_backlog(services, len(stored))
    except BaseException:
        await _discard_all(services, stored)
        raise
    batch = BatchRecord(new_job_id(), who.owner, utc_now(), tuple(s.job_id for s in stored))
    if scope is not None:
        ttl = settings.idempotency_ttl
        claimed = await batches.claim_once(scope, batch.id, fingerprint, ttl)
        if claimed is not None:
            await _discard_all(services, stored)
            return await _replay(services, batches, claimed, fingerprint, who)
    queued = 0
    lagging: ReplicationLagging | None = None
    try:
        await batches.create(batch, settings.result_ttl)
        for item in stored:
            try:
                await enqueue(services, item, who, max_backlog=0, callback_url=callback_url)
            except ReplicationLagging as exc:  # queued all the same: its files stay
                lagging = exc
            queued += 1
    except BaseException:
        await _discard_all(services, stored[queued:])
        await _forget(batches, batch.id, scope)
        raise
    log.info(
        "batch %s accepted",
        batch.id,
        extra={"event": "batch.accepted", "batch": batch.id, "jobs": len(stored)},
    )
    if lagging is not None:
        raise ApiError(
            503,
            "replication_lagging",
            f"batch {batch.id} was queued, but not every job was confirmed by the Redis "
            f"replicas ({lagging}); look it up at /api/batches/{batch.id}",
            retry_after(RETRY_AFTER_MOMENT),
        )
    return _accepted(services, batch)


async def _draw_tokens(request: Request, images: int) -> None:
    """A batch of N images draws N tokens of its client's rate limit, as N jobs would (the
    request itself drew one before its body was read)."""
    wait = await take_more(request.scope, request.app.state.keyring, images - 1)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"a batch of {images} images counts as {images} uploads; try again in {seconds} s "
            "(IMGSTREAM_RATE_LIMIT_PER_SECOND)",
            retry_after(seconds),
        )


async def _check_backlog(services: Services, jobs: int) -> None:
    limit = services.settings.max_backlog
    if not limit:
        return
    backlog = await services.queue.backlog()
    if backlog + jobs > limit:
        raise backlog_full(BacklogFull(backlog)) from None


async def _replay(
    services: Services,
    batches: BatchStore,
    prior: tuple[str, str],
    fingerprint: str,
    who: Caller,
) -> JSONResponse:
    batch_id, request = prior
    if request != fingerprint:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"this {IDEMPOTENCY_HEADER} was used for a different batch (other images, "
            "steps or output); use a new key for a new request",
        )
    batch = await batches.get(batch_id) if batch_id else None
    if batch is None or not who.may_see(batch.owner):
        raise ApiError(
            409,
            "idempotency_in_progress",
            f"a request with this {IDEMPOTENCY_HEADER} is still being accepted; retry in a moment",
            retry_after(RETRY_AFTER_MOMENT),
        )
    jobs = await services.queue.get_jobs(batch.job_ids)
    return _accepted(services, batch, jobs, replayed=True)


def _accepted(
    services: Services,
    batch: BatchRecord,
    jobs: list[JobRecord | None] | None = None,
    *,
    replayed: bool = False,
) -> JSONResponse:
    """The 202: a new batch (``jobs`` None: all just queued), or one made before, its jobs
    as they are now (those no longer kept left out)."""
    base = services.settings.public_url
    if jobs is None:
        status = BatchStatus.PROCESSING
        accepted = [JobAccepted.for_job(job_id, base) for job_id in batch.job_ids]
    else:
        status = BatchCounts.of(jobs).status
        accepted = [JobAccepted.for_job(job.id, base, job.status) for job in jobs if job]
    view = BatchAccepted(
        id=batch.id, status=status, jobs=accepted, links=batch_links(batch.id, base)
    )
    headers = {"Location": view.links.self}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)


async def _discard_all(services: Services, stored: list[Stored]) -> None:
    for item in stored:
        await discard(services, item.job_id)


async def _forget(batches: BatchStore, batch_id: str, scope: str | None) -> None:
    """Undo a batch that could not be queued whole; Redis may be down, so best effort."""
    try:
        await batches.delete(batch_id)
        if scope is not None:
            await batches.release_once(scope)
    except Exception as exc:  # the original error is what the client needs to hear
        log.warning("could not forget refused batch %s: %s", batch_id, exc)
