"""Taking an upload in: validate the form, store the original, queue the job, and answer.

Promises: a ``202`` is sent only once the original is stored and the job is queued; an
``Idempotency-Key`` sent again by the same client within ``IMGSTREAM_IDEMPOTENCY_TTL``
creates nothing and answers with the job it first made (``409 idempotency_conflict`` when
the request differs), and two concurrent retries make one job: the key's record is written
by the same script that queues the job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from imgstream import upload_form
from imgstream.auth import Caller
from imgstream.content import content_key
from imgstream.errors import ApiError
from imgstream.idempotency import accepted, idempotency_scope, replay, request_fingerprint
from imgstream.job_counters import operation_label
from imgstream.jobs import OriginalInfo, StreamEntry
from imgstream.lifecycle import JobStatus
from imgstream.operations import JobSpec, SpecError, spec_from_form
from imgstream.producer import BacklogFull, Once, Replayed, ReplicationLagging
from imgstream.services import Services, services_of
from imgstream.storage import spooled_source
from imgstream.upload_form import FormError, HashedUpload, TooManyFiles, Upload, read_upload
from imgstream.upload_refusals import (
    backlog_full,
    check_free_space,
    check_size,
    checked_original,
    discard,
    replication_lagging,
    storage_full_refused,
)
from imgstream.webhooks import RefusedUrl, parse_url, resolve

log = logging.getLogger("imgstream.api")

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
        info = await checked_original(services, spooled_source(image.file), spec, single)
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
    return Stored(job_id, entry, image.filename or "", info, size)


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


Accept = Callable[[Request, Caller, FormData], Awaitable[JSONResponse]]


async def with_form(
    request: Request, who: Caller, max_files: int, accept: Accept, *, draft: bool = False
) -> JSONResponse:
    """Read the upload form (at most ``max_files`` files spooled), hand it to ``accept``,
    and remove its spooled files afterwards. With ``draft``, the image is written into the
    storage's draft as it arrives, to be stored without a copy: while the data directory is
    above its reserve (below it, nothing is written before the 507)."""
    drafts = None
    if draft:
        services = services_of(request)
        free = await anyio.to_thread.run_sync(services.storage.free_bytes)
        if free >= services.settings.min_free_bytes:
            drafts = services.storage.draft_original
    try:
        form = await upload_form.parse(request, max_files=max_files, drafts=drafts)
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
        info = await self._probe()
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
        if not image.drafted:  # a draft was made only above the reserve
            await check_free_space(services)
        check_size(services, image.size or 0)
        info = await self._probe()  # nothing stored for a refusal
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
        """Store the upload as ``name`` (its draft, or a copy of its spool); a shared
        original stored already is kept as is."""
        storage, image = self.services.storage, self.upload.image

        def store() -> int:
            if name != self.job_id and storage.has_original(name):
                return image.size or 0
            if image.drafted:
                return storage.commit_original(image.file, name)
            image.file.seek(0)
            return storage.save_original(name, image.file)

        return await anyio.to_thread.run_sync(store)

    async def _probe(self) -> OriginalInfo:
        """The header's facts, read from the bytes in memory when the upload is small (in
        the event loop: no thread), else from its file; a draft the disk refused is a 507."""
        image = self.upload.image
        if image.failure is not None:
            with storage_full_refused():
                raise image.failure
        single = bool(self.upload.fields.get("operation", "").strip())
        held = image.held
        source = spooled_source(image.file) if held is None else held
        return await checked_original(
            self.services, source, self.spec, single, inline=held is not None
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
