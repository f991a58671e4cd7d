"""The HTTP face of imgstream: accept uploads, report job status, serve results and the page.

Promises: a ``202`` is sent only after the original is stored and its stream entry exists;
anything a client sent wrong gets a 4xx with ``{"error": {"code", "message"}}``, never a 500;
while Redis is unreachable, frozen, refusing commands or out of pool connections the API
answers ``503`` with ``Retry-After`` and the cause, and while the disk is full ``507``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, cast

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import request_response

from imgstream import imaging, upload_form
from imgstream.api_models import (
    ERROR_RESPONSES,
    ErrorBody,
    JobAccepted,
    JobView,
    LimitsView,
    job_view,
)
from imgstream.assets import StaticAssets
from imgstream.auth import Caller, KeyRing, caller
from imgstream.batch_api import BATCHES_PATH
from imgstream.batch_api import install as install_batch_routes
from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.errors import (
    RETRY_AFTER_BUSY,
    RETRY_AFTER_MOMENT,
    ApiError,
    error_response,
    retry_after,
)
from imgstream.intake import accept, with_form
from imgstream.job_changes import EventHub, TooManyStreams
from imgstream.jobs import JobRecord, is_valid_job_id
from imgstream.lifecycle import JobStatus
from imgstream.middleware.api_keys import ApiKeyGate
from imgstream.middleware.body_limit import BodySizeLimit
from imgstream.middleware.cors import cors_options
from imgstream.middleware.head import HeadAsGet
from imgstream.middleware.json_errors import JsonErrors
from imgstream.middleware.rate_limit import RateLimit
from imgstream.middleware.request_limits import RequestLimits
from imgstream.middleware.security_headers import SecurityHeaders
from imgstream.operations import Limits, OutputFormat
from imgstream.ops_api import install as install_operator_routes
from imgstream.ratelimit import client_identity, install_limiters
from imgstream.redis_health import describe, is_outage
from imgstream.result_download import Freshness, download_name, result_response
from imgstream.services import STATIC_DIR, Services, services_of
from imgstream.sse import EventStreamResponse, StatusView, status_events, stream_refused
from imgstream.storage import StorageUnavailable
from imgstream.upload_refusals import readiness_problem

log = logging.getLogger("imgstream.api")

MULTIPART_OVERHEAD = 64 * 1024
"""Room for form fields and boundaries on top of the image's own size limit."""

DOCS_ASSETS = "/docs-assets"


def create_app(settings: Settings) -> FastAPI:
    """The ASGI application, wired to Redis and storage as ``settings`` say."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            deployment = Deployment.open(settings)
            await anyio.to_thread.run_sync(deployment.storage.check)
        except StorageUnavailable as exc:
            log.critical("the API cannot start: %s", exc, extra={"event": "storage.unavailable"})
            raise
        hub = EventHub(
            deployment.redis,
            deployment.keys,
            deployment.queue.get_job,
            max_streams=settings.max_streams,
            max_per_client=settings.max_streams_per_client,
        )
        storage = deployment.storage
        app.state.services = Services(deployment, settings.limits, hub)
        imaging.configure(
            concurrency=1, cache_max_mem_mb=0, allow_untrusted=settings.allow_untrusted_formats
        )
        install_limiters(app.state, settings, deployment.redis)
        removed = await anyio.to_thread.run_sync(storage.remove_dead_temporaries)
        if removed:
            log.warning("removed %d temporary files left by a crashed process", removed)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(hub.run)
                yield
                tasks.cancel_scope.cancel()
        finally:
            await hub.aclose()
            await deployment.aclose()

    app = FastAPIOffline(  # Swagger UI served from the package: no CDN, works offline
        title="imgstream",
        summary="Resize, grayscale and blur images through a Redis Streams job queue.",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    _install_error_handlers(app)
    _install_routes(app, settings.limits)
    _install_event_routes(app)
    install_batch_routes(app, settings.limits, settings.batch_max_files)
    app.mount("/static", StaticAssets(directory=STATIC_DIR), name="static")
    # Listed innermost first: a request meets the header and URL limits, HEAD handling,
    # security headers, JSON errors, CORS, the rate limit, the key check and the upload limit
    # in the reverse order, all before its body is read.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        reported_limit=settings.max_upload_bytes,
        paths=frozenset({"/api/jobs"}),
    )
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.batch_max_bytes + MULTIPART_OVERHEAD,
        reported_limit=settings.batch_max_bytes,
        paths=frozenset({BATCHES_PATH}),
        setting="IMGSTREAM_BATCH_MAX_BYTES",
    )
    _install_access_control(app, settings)
    app.add_middleware(JsonErrors)
    app.add_middleware(SecurityHeaders, docs_paths=("/docs", DOCS_ASSETS))
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        RequestLimits,
        max_headers=settings.http_max_headers,
        max_url_bytes=settings.http_max_url_bytes,
    )
    install_operator_routes(app)
    return app


def _install_access_control(app: FastAPI, settings: Settings) -> None:
    """API keys (``auth``), per-client rate limits (``ratelimit``) and the CORS allow-list."""
    keyring = KeyRing(
        (key.get_secret_value() for key in settings.api_keys),
        (key.get_secret_value() for key in settings.admin_keys),
    )
    app.state.keyring = keyring
    app.add_middleware(ApiKeyGate, keyring=keyring)
    app.add_middleware(RateLimit, keyring=keyring)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origins))


def _install_routes(app: FastAPI, limits: Limits) -> None:
    @app.post(
        "/api/jobs",
        status_code=202,
        response_model=JobAccepted,
        responses=ERROR_RESPONSES,
        summary="Upload an image and queue a job",
        openapi_extra={"requestBody": upload_form.form_schema(limits)},
    )
    async def create_job(request: Request, who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
        return await with_form(request, who, 2, accept, draft=True)

    @app.get(
        "/api/jobs/{job_id}",
        response_model=JobView,
        responses=ERROR_RESPONSES,
        summary="Job status",
    )
    async def get_job(
        request: Request, job_id: str, who: Annotated[Caller, Depends(caller)]
    ) -> JobView:
        services = services_of(request)
        record = await _find_job(services, job_id, who)
        return job_view(record, services.settings.public_url)

    _serve_lean(app, "POST", "/api/jobs")
    _serve_lean(app, "GET", "/api/jobs/{job_id}")

    @app.get(
        "/api/jobs/{job_id}/result",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}, **ERROR_RESPONSES},
        summary="The processed image",
    )
    async def get_result(
        request: Request, job_id: str, who: Annotated[Caller, Depends(caller)]
    ) -> Response:
        services = services_of(request)
        record = await _find_job(services, job_id, who)
        if record.status is not JobStatus.DONE or record.result is None:
            if record.status is JobStatus.FAILED and record.error is not None:
                raise ApiError(409, "job_failed", f"the job failed: {record.error.message}")
            raise ApiError(409, "not_ready", f"the job is {record.status.value}; no result yet")
        freshness = Freshness(
            seconds=await services.queue.time_left(job_id, services.settings.result_ttl),
            shared=not request.app.state.keyring.enabled,
            key=record.result.content_key,
        )
        unchanged = freshness.not_modified(request.headers)
        if unchanged is not None:
            return unchanged
        extension = OutputFormat(record.result.format).extension
        name = record.result.stored_name(job_id)
        stored = await anyio.to_thread.run_sync(services.storage.find_result, name, extension)
        if stored is None:
            raise ApiError(404, "result_gone", "the result is no longer stored")
        return await result_response(
            stored,
            request.headers,
            media_type=f"image/{record.result.format}",
            filename=download_name(record.filename, job_id, extension),
            freshness=freshness,
        )

    @app.get(
        "/api/limits",
        response_model=LimitsView,
        summary="What a job may ask for: the operator's limits (public, no key needed)",
    )
    async def get_limits(request: Request) -> LimitsView:
        return LimitsView.from_settings(services_of(request).settings)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Redis is reachable and a worker was seen lately",
        responses={503: {"model": ErrorBody}},
    )
    async def readyz(request: Request) -> dict[str, str]:
        services = services_of(request)
        limit = services.settings.ready_timeout
        with anyio.move_on_after(limit):
            problem = await readiness_problem(services)
            if problem is None:
                return {"status": "ready"}
            raise ApiError(503, *problem, retry_after(RETRY_AFTER_BUSY))
        raise ApiError(
            503,
            "unavailable",
            f"Redis did not answer within {limit:g} s (IMGSTREAM_READY_TIMEOUT)",
            retry_after(RETRY_AFTER_MOMENT),
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _serve_lean(app: FastAPI, method: str, path: str) -> None:
    """Serve a busy route as a plain Starlette endpoint calling its FastAPI one, with the
    path's parameters and the caller: no dependency solving, no response re-validation (a
    model it returns is sent as it is). FastAPI's declaration stays the OpenAPI schema's."""
    route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == path)
    assert route.methods == {method}, "one route, one method"
    endpoint = route.endpoint

    async def lean(request: Request) -> Response:
        answer = await endpoint(request, **request.path_params, who=await caller(request))
        if isinstance(answer, BaseModel):
            return Response(answer.model_dump_json(), media_type="application/json")
        return cast(Response, answer)

    route.app = request_response(lean)


# Live status (Server-Sent Events): kept in a block of its own, apart from the other routes.


def _install_event_routes(app: FastAPI) -> None:
    @app.get(
        "/api/jobs/{job_id}/events",
        response_class=StreamingResponse,  # the subclass's signature confuses the schema
        responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
        summary="Live job status (Server-Sent Events)",
        description=(
            "`status` events, each the job as `GET /api/jobs/{id}` shows it: the current "
            "state at once, then every change; the stream ends after `done` or `failed`."
        ),
    )
    async def job_events(
        request: Request, job_id: str, who: Annotated[Caller, Depends(caller)]
    ) -> Response:
        services = services_of(request)
        if not is_valid_job_id(job_id):
            raise ApiError(404, "not_found", "no such job")
        client = client_identity(request.scope, request.app.state.keyring)
        try:
            follower = await services.hub.follow(job_id, client)
        except TooManyStreams as exc:
            raise stream_refused(exc) from None
        try:
            first = _snapshot(services, await _find_job(services, job_id, who))
        except BaseException:
            await follower.aclose()
            raise

        def snapshot(record: JobRecord) -> StatusView:
            return _snapshot(services, record)

        events = status_events(first, follower, snapshot, services.settings.sse_keepalive)
        return EventStreamResponse(events, on_close=follower.aclose)


def _snapshot(services: Services, record: JobRecord) -> StatusView:
    view = job_view(record, services.settings.public_url)
    return StatusView(data=view.model_dump_json(), final=record.status.is_final)


async def _find_job(services: Services, job_id: str, who: Caller) -> JobRecord:
    """The job, if it exists and is the caller's; another key's job is reported missing."""
    if not is_valid_job_id(job_id):
        raise ApiError(404, "not_found", "no such job")
    record = await services.queue.get_job(job_id)
    if record is None or not who.may_see(record.owner):
        raise ApiError(404, "not_found", "no such job (unknown, or expired)")
    return record


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StorageUnavailable)
    async def on_storage_unavailable(_: Request, exc: StorageUnavailable) -> JSONResponse:
        log.error("storage unavailable: %s", exc, extra={"event": "storage.unavailable"})
        return error_response(
            503, "storage_unavailable", f"{exc}; try again later", retry_after(RETRY_AFTER_BUSY)
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors():
            location = ".".join(str(piece) for piece in item.get("loc", ()) if piece != "body")
            problems.append(f"{location}: {item.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    async def on_redis_error(_: Request, exc: Exception) -> JSONResponse:
        if not is_outage(exc):
            return await on_unexpected(_, exc)
        code, message = describe(exc)
        log.warning("redis unavailable: %s", exc, extra={"event": "redis.unavailable"})
        return error_response(503, code, message, retry_after(RETRY_AFTER_MOMENT))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error; it has been logged")

    async def on_client_gone(_: Request, exc: Exception) -> Response:
        return Response(status_code=400)  # no one is left to read it: the client went away

    app.add_exception_handler(RedisError, on_redis_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
