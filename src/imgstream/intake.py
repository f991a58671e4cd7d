"""Taking an upload in: validate the form, store the original, queue the job, and answer.

Promises: a ``202`` is sent only once the original is stored and the job is queued; an
``Idempotency-Key`` sent again by the same client within ``IMGSTREAM_IDEMPOTENCY_TTL``
creates nothing and answers with the job it first made (``409 idempotency_conflict`` when
the request differs), and two concurrent retries make one job: the key's record is written
by the same script that queues the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from imgstream import imaging, upload_form
from imgstream.api_models import JobAccepted
from imgstream.auth import Caller
from imgstream.content import content_key
from imgstream.errors import (
    RETRY_AFTER_BUSY,
    RETRY_AFTER_DISK,
    RETRY_AFTER_MOMENT,
    ApiError,
    retry_after,
)
from imgstream.job_counters import operation_label
from imgstream.jobs import OriginalInfo, StreamEntry
from imgstream.lifecycle import JobStatus
from imgstream.operations import JobSpec, SpecError, check_geometry, spec_from_form
from imgstream.queue import BacklogFull, Once, Replayed, ReplicationLagging
from imgstream.ratelimit import client_identity
from imgstream.services import Services, services_of
from imgstream.storage import StorageUnavailable, is_disk_full, spooled_source
from imgstream.upload_form import FormError, HashedUpload, TooManyFiles, Upload, read_upload
from imgstream.webhooks import RefusedUrl, parse_url, resolve

log = logging.getLogger("imgstream.api")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_IMAGING_STATUS = {"unsupported_format": 415, "limit_exceeded": 422, "decode_error": 415}
CALLBACK_FIELD = "callback_url"
RESOLVE_TIMEOUT = 5.0
"""Seconds the callback URL's host may take to resolve at upload."""


async def checked_callback(services: Services, url: str) -> str:
    """``url`` once it is fit to be called when the job ends ("" for none), else a 422."""
    url = url.strip()
    if not url:
        return ""
    settings = services.settings
    if settings.webhook_secret is None:
        raise ApiError(
            422,
            "webhooks_disabled",
            "callback_url needs the operator to set IMGSTREAM_WEBHOOK_SECRET (calls are signed)",
        )
    try:
        target = parse_url(url)
        with anyio.fail_after(RESOLVE_TIMEOUT):
            await anyio.to_thread.run_sync(
                lambda: resolve(target, allow_private=settings.webhook_allow_private),
                abandon_on_cancel=True,
            )
    except RefusedUrl as exc:
        raise ApiError(422, "invalid_callback_url", str(exc)) from None
    except TimeoutError:
        raise ApiError(
            422,
            "invalid_callback_url",
            f"callback_url's host did not resolve in {RESOLVE_TIMEOUT:g} s",
        ) from None
    return url


def disk_full_message(free: int, reserve: int) -> str:
    return (
        f"the data directory has {free} bytes free, under the {reserve} it keeps in reserve "
        "(IMGSTREAM_MIN_FREE_BYTES); try again later"
    )


def request_fingerprint(image_digest: str, spec: JobSpec, extra: dict[str, str]) -> str:
    """What makes two uploads the same request: the image's bytes, the steps, the output
    options and ``extra`` fields (a callback URL); not the file's name."""
    canonical = json.dumps(
        {
            "image": image_digest,
            "operations": json.loads(spec.operations_json()),
            "output": spec.output_fields(),
            **extra,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_scope(request: Request) -> str | None:
    """The digest naming this client's ``Idempotency-Key``, or None when none was sent.

    The client is the API key (its fingerprint), or the address while keys are off, so
    two clients never share a key's record.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422,
            "invalid_request",
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters (a UUID, say)",
        )
    client = client_identity(request.scope, request.app.state.keyring)
    return hashlib.sha256(f"{client}\n{key}".encode()).hexdigest()


async def replay(services: Services, prior: Replayed, fingerprint: str) -> JSONResponse:
    """The answer to a repeated key: its job as first accepted, or a conflict."""
    if prior.request != fingerprint:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"this {IDEMPOTENCY_HEADER} was used for a different request (another image, "
            "steps or output); use a new key for a new request",
        )
    record = await services.queue.get_job(prior.job_id)
    status = record.status if record is not None else JobStatus.QUEUED
    return accepted(services, prior.job_id, status, replayed=True)


def accepted(
    services: Services, job_id: str, status: JobStatus = JobStatus.QUEUED, *, replayed: bool = False
) -> JSONResponse:
    view = JobAccepted.for_job(job_id, services.settings.public_url, status)
    headers = {"Location": view.links.self}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)


def checked_form(services: Services, fields: dict[str, str]) -> JobSpec:
    """The steps and output options of ``fields``, or a 422 saying what to change."""
    try:
        return spec_from_form(fields, services.limits)
    except FormError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    except SpecError as exc:  # a limit too: the parameters are to change, not the image
        raise ApiError(422, "invalid_parameters", str(exc)) from None


@dataclass(frozen=True, slots=True)
class Stored:
    """An upload whose original is stored and whose header passed every check: ready to
    queue, or to discard (``discard``) if it will not be."""

    job_id: str
    entry: StreamEntry
    filename: str
    original: OriginalInfo
    size: int


async def store(
    services: Services,
    image: HashedUpload,
    spec: JobSpec,
    *,
    single: bool,
    scope: str | None = None,
) -> Stored:
    """Store ``image`` under a new job id and check it against ``spec`` and the limits.

    Nothing is left behind when it is refused (the error says why, as a 4xx or 507).
    ``single`` says the steps came as one ``operation`` (its geometry errors say so).
    """
    job_id = services.queue.new_job_id(scope)
    storage = services.storage
    await check_free_space(services)
    with storage_full_refused():
        size = await anyio.to_thread.run_sync(storage.save_original, job_id, image.file)
    try:
        check_size(services, size)
        source = spooled_source(image.file)
        try:
            info = await anyio.to_thread.run_sync(imaging.probe, source, services.limits)
        except imaging.ImagingError as exc:
            raise ApiError(_IMAGING_STATUS.get(exc.code, 422), exc.code, str(exc)) from None
        try:
            check_geometry(spec, info.width, info.height, single_step=single)
        except SpecError as exc:
            raise ApiError(422, "invalid_parameters", str(exc)) from None
    except BaseException:
        await discard(services, job_id)
        raise
    output = spec.output_fields()
    entry = StreamEntry(
        job_id=job_id,
        operations=spec.operations_json(),
        format=output.pop("format", ""),
        options=tuple(output.items()),
        original_sha256=image.sha256,
    )
    original = OriginalInfo(
        width=info.width,
        height=info.height,
        format=info.format,
        has_alpha=info.has_alpha,
        pages=info.pages,
    )
    return Stored(job_id, entry, image.filename or "", original, size)


async def enqueue(
    services: Services,
    stored: Stored,
    who: Caller,
    *,
    max_backlog: int,
    once: Once | None = None,
    callback_url: str = "",
) -> None:
    """Queue a stored upload (the queue's errors, ``Replayed`` and ``BacklogFull``, pass)."""
    await services.queue.enqueue(
        stored.job_id,
        stored.entry,
        filename=stored.filename,
        owner=who.owner,
        max_backlog=max_backlog,
        original=stored.original,
        once=once,
        callback_url=callback_url,
    )
    log.info(
        "job %s accepted",
        stored.job_id,
        extra={"event": "job.accepted", "job": stored.job_id, "bytes": stored.size,
               "operation": operation_label(stored.entry.operations)},
    )  # fmt: skip


def replication_lagging(exc: ReplicationLagging) -> ApiError:
    """The answer to an upload queued on its master but not confirmed by enough replicas."""
    return ApiError(
        503,
        "replication_lagging",
        f"{exc}; it runs unless that Redis master fails first: look it up at "
        f"/api/jobs/{exc.job_id}, or send again (with the same Idempotency-Key to be safe)",
        retry_after(RETRY_AFTER_MOMENT),
    )


def backlog_full(exc: BacklogFull) -> ApiError:
    return ApiError(429, "backlog_full", f"{exc}; try again shortly", retry_after(RETRY_AFTER_BUSY))


Accept = Callable[[Request, Caller, FormData], Awaitable[JSONResponse]]


async def with_form(request: Request, who: Caller, max_files: int, accept: Accept) -> JSONResponse:
    """Read the upload form (at most ``max_files`` files spooled), hand it to ``accept``,
    and remove its spooled files afterwards."""
    try:
        form = await upload_form.parse(request, max_files=max_files)
    except TooManyFiles as exc:
        raise ApiError(413, "too_many_files", str(exc)) from None
    except FormError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    try:
        return await accept(request, who, form)
    finally:
        await form.close()


async def accept(request: Request, who: Caller, form: FormData) -> JSONResponse:
    """Validate the form, store the original, queue the job: a 202 only once it is queued
    (or, from the result cache, done)."""
    services = services_of(request)
    scope = idempotency_scope(request)
    try:
        upload = read_upload(form)
    except FormError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    callback_url = await checked_callback(services, upload.fields.pop(CALLBACK_FIELD, ""))
    spec = checked_form(services, upload.fields)
    image = upload.image
    once = None
    if scope is not None:
        fingerprint = request_fingerprint(image.sha256, spec, {CALLBACK_FIELD: callback_url})
        prior = await services.queue.find_once(scope)
        if prior is not None:
            return await replay(services, prior, fingerprint)
        once = Once(scope, fingerprint, services.settings.idempotency_ttl)
    job_id = services.queue.new_job_id(scope)  # in the partition of its idempotency record
    job = Intake(services, job_id, upload, spec, who.owner, once, callback_url)
    if services.settings.result_cache:
        done = await job.from_cache()
        if done is not None:
            return done
    return await job.queue()


@dataclass(frozen=True, slots=True)
class Intake:
    """One upload, validated, on its way to being a job."""

    services: Services
    job_id: str
    upload: Upload
    spec: JobSpec
    owner: str
    once: Once | None
    callback_url: str

    async def from_cache(self) -> JSONResponse | None:
        """The job, done at once with the cached result of an equal one; None on a miss.

        Nothing is stored: the new job (the caller's, its own id) names the cached result,
        which is pinned for it in the same step as the lookup.
        """
        services, image = self.services, self.upload.image
        key = content_key(image.sha256, self.spec)
        result = await services.deployment.shared.claim(key, self.job_id)
        if result is None:
            return None
        check_size(services, image.size or 0)
        info = await self._probe(spooled_source(image.file))
        try:
            await services.queue.enqueue_done(
                self.job_id,
                self._entry(""),
                result,
                ttl=services.settings.result_ttl,
                filename=image.filename or "",
                owner=self.owner,
                original=info,
                once=self.once,
                callback_url=self.callback_url,
            )
        except Replayed as prior:  # a concurrent retry with the same key made its job first
            assert self.once is not None
            return await replay(services, prior, self.once.request)
        log.info(
            "job %s done from the result cache",
            self.job_id,
            extra={"event": "job.cached", "job": self.job_id, "content_key": key},
        )
        return accepted(services, self.job_id, JobStatus.DONE)

    async def queue(self) -> JSONResponse:
        """Store the original (once per content hash while the cache is on) and queue."""
        services, image, job_id = self.services, self.upload.image, self.job_id
        await check_free_space(services)
        check_size(services, image.size or 0)
        info = await self._probe(spooled_source(image.file))  # nothing stored for a refusal
        shared = services.settings.result_cache
        if shared and await services.deployment.shared.pin(image.sha256, job_id):
            name = image.sha256  # stored once per content hash
        else:
            name = job_id
        with storage_full_refused():
            size = await self._store(name)
        try:
            entry = self._entry("" if name == job_id else name)
            await services.queue.enqueue(
                job_id,
                entry,
                filename=image.filename or "",
                owner=self.owner,
                max_backlog=services.settings.max_backlog,
                original=info,
                once=self.once,
                callback_url=self.callback_url,
            )
        except Replayed as prior:  # a concurrent retry with the same key queued its job first
            await discard(services, job_id)
            assert self.once is not None
            return await replay(services, prior, self.once.request)
        except BacklogFull as exc:
            await discard(services, job_id)
            raise backlog_full(exc) from None
        except ReplicationLagging as exc:  # queued: its files stay, the client is told the risk
            raise replication_lagging(exc) from None
        except BaseException:
            await discard(services, job_id)
            raise
        log.info(
            "job %s accepted",
            job_id,
            extra={"event": "job.accepted", "job": job_id, "bytes": size,
                   "operation": operation_label(entry.operations)},
        )  # fmt: skip
        return accepted(services, job_id)

    async def _store(self, name: str) -> int:
        """Store the upload as ``name``; a shared original stored already is kept as is."""
        storage, image = self.services.storage, self.upload.image
        if name != self.job_id and await anyio.to_thread.run_sync(storage.has_original, name):
            return image.size or 0
        image.file.seek(0)
        return await anyio.to_thread.run_sync(storage.save_original, name, image.file)

    async def _probe(self, source: Path | bytes) -> OriginalInfo:
        """What the upload is, from its header; a 4xx when it is no image we take, or its
        geometry does not suit the steps."""
        try:
            info = await anyio.to_thread.run_sync(imaging.probe, source, self.services.limits)
        except imaging.ImagingError as exc:
            raise ApiError(_IMAGING_STATUS.get(exc.code, 422), exc.code, str(exc)) from None
        try:
            single = bool(self.upload.fields.get("operation", "").strip())
            check_geometry(self.spec, info.width, info.height, single_step=single)
        except SpecError as exc:
            raise ApiError(422, "invalid_parameters", str(exc)) from None
        return OriginalInfo(
            width=info.width,
            height=info.height,
            format=info.format,
            has_alpha=info.has_alpha,
            pages=info.pages,
        )

    def _entry(self, original_name: str) -> StreamEntry:
        output = self.spec.output_fields()
        return StreamEntry(
            job_id=self.job_id,
            operations=self.spec.operations_json(),
            format=output.pop("format", ""),
            options=tuple(output.items()),
            original_sha256=self.upload.image.sha256,
            original_name=original_name,
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


async def discard(services: Services, job_id: str) -> None:
    """Delete the files of an upload that was not queued; a store that fails now leaves
    them to the janitor's orphan sweep rather than hide why the upload failed."""
    try:
        await anyio.to_thread.run_sync(services.storage.delete, job_id)
    except OSError as exc:
        log.warning("could not delete the files of refused job %s: %s", job_id, exc)
