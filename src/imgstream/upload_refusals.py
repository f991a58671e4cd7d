"""The checks an upload must pass before it is queued, and the answers when it does not;
and what keeps this instance from taking uploads at all (``readiness_problem``, ``/readyz``).

Each refusal is a clear 4xx or 5xx with a reason a person can act on, never a 500, and
leaves nothing behind (``discard``): the disk below its reserve or full (507), an empty or
oversized file (415, 413), no image we take or a geometry that does not suit the steps
(415, 422), the backlog at its bound (429), replicas that did not confirm in time (503).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.to_thread

from imgstream import imaging
from imgstream.errors import (
    RETRY_AFTER_BUSY,
    RETRY_AFTER_DISK,
    RETRY_AFTER_MOMENT,
    ApiError,
    retry_after,
)
from imgstream.fleet_snapshot import Monitor
from imgstream.jobs import OriginalInfo
from imgstream.operations import JobSpec, SpecError, check_geometry
from imgstream.producer import BacklogFull, ReplicationLagging
from imgstream.redis_health import INFO_SECTIONS, info_problem
from imgstream.services import Services
from imgstream.storage import StorageUnavailable, is_disk_full

log = logging.getLogger("imgstream.api")

_IMAGING_STATUS = {"unsupported_format": 415, "limit_exceeded": 422, "decode_error": 415}


async def checked_original(
    services: Services, source: Path | bytes, spec: JobSpec, single: bool, *, inline: bool = False
) -> OriginalInfo:
    """What the upload is, from its header; a 4xx when it is no image we take, or its
    geometry does not suit the steps (``single``: they came as one ``operation``).
    ``inline`` probes in the event loop: for small bytes in memory, cheaper than a thread."""
    try:
        if inline:
            info = imaging.probe(source, services.limits)
        else:
            info = await anyio.to_thread.run_sync(imaging.probe, source, services.limits)
    except imaging.ImagingError as exc:
        raise ApiError(_IMAGING_STATUS.get(exc.code, 422), exc.code, str(exc)) from None
    try:
        check_geometry(spec, info.width, info.height, single_step=single)
    except SpecError as exc:
        raise ApiError(422, "invalid_parameters", str(exc)) from None
    return OriginalInfo(
        width=info.width,
        height=info.height,
        format=info.format,
        has_alpha=info.has_alpha,
        pages=info.pages,
    )


def check_size(services: Services, size: int) -> None:
    """An empty upload is no image (415); one over the limit is refused (413)."""
    if size == 0:
        raise ApiError(415, "unsupported_format", "the uploaded file is empty")
    if size > services.settings.max_upload_bytes:
        raise ApiError(
            413,
            "too_large",
            f"the upload is larger than {services.settings.max_upload_bytes} bytes "
            "(IMGSTREAM_MAX_UPLOAD_BYTES)",
        )


async def check_free_space(services: Services) -> None:
    """A 507 when the data directory is below its reserve (``IMGSTREAM_MIN_FREE_BYTES``)."""
    free = await anyio.to_thread.run_sync(services.storage.free_bytes)
    if free < services.settings.min_free_bytes:
        raise ApiError(
            507,
            "insufficient_storage",
            disk_full_message(free, services.settings.min_free_bytes),
            retry_after(RETRY_AFTER_DISK),
        )


def disk_full_message(free: int, reserve: int) -> str:
    return (
        f"the data directory has {free} bytes free, under the {reserve} it keeps in reserve "
        "(IMGSTREAM_MIN_FREE_BYTES); try again later"
    )


@contextmanager
def storage_full_refused() -> Iterator[None]:
    """A store that fills the disk while an upload is written becomes a 507; an unreachable
    store (``StorageUnavailable``) and other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, StorageUnavailable):
            raise
        if not is_disk_full(exc):
            raise
        log.error("upload refused, the data directory is full: %s", exc)
        raise ApiError(
            507,
            "insufficient_storage",
            "the data directory is full; the upload was not stored, try again later",
            retry_after(RETRY_AFTER_DISK),
        ) from None


def backlog_full(exc: BacklogFull) -> ApiError:
    return ApiError(429, "backlog_full", f"{exc}; try again shortly", retry_after(RETRY_AFTER_BUSY))


def replication_lagging(exc: ReplicationLagging) -> ApiError:
    """The answer to an upload queued on its master but not confirmed by enough replicas."""
    return ApiError(
        503,
        "replication_lagging",
        f"{exc}; it runs unless that Redis master fails first: look it up at "
        f"/api/jobs/{exc.job_id}, or send again (with the same Idempotency-Key to be safe)",
        retry_after(RETRY_AFTER_MOMENT),
    )


async def discard(services: Services, job_id: str) -> None:
    """Delete the files of an upload that was not queued; a store that fails now leaves
    them to the janitor's orphan sweep rather than hide why the upload failed."""
    try:
        await anyio.to_thread.run_sync(services.storage.delete, job_id)
    except OSError as exc:
        log.warning("could not delete the files of refused job %s: %s", job_id, exc)


async def readiness_problem(services: Services) -> tuple[str, str] | None:
    """(code, message) of what keeps this instance from taking jobs now, or None."""
    settings = services.settings
    info = await services.queue.redis.info(*INFO_SECTIONS)
    problem = info_problem(info, allow_eviction=settings.allow_eviction)
    if problem is not None:
        return "redis_unfit", problem
    free = await anyio.to_thread.run_sync(services.storage.free_bytes)
    if free < settings.min_free_bytes:
        return "disk_full", disk_full_message(free, settings.min_free_bytes)
    try:
        await anyio.to_thread.run_sync(services.storage.check, abandon_on_cancel=True)
    except StorageUnavailable as exc:
        return "storage_unavailable", str(exc)
    age = settings.ready_worker_age
    if age and not await Monitor.of(services.deployment).worker_seen_within(age):
        return "no_workers", f"no worker has been seen for {age:g} s (IMGSTREAM_READY_WORKER_AGE)"
    return None
