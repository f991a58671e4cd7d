"""HTTP routes for operators: Prometheus ``/metrics``, ``/api/stats``, the ``/dashboard`` page,
and retrying a dead letter. ``install`` wires them (and the HTTP metrics middleware) into
the app with one call from ``create_app``.

These handlers only translate: every Redis command is in ``fleet_snapshot``, ``job_counters`` or
``deadletters``. Routes that change something live under ``/api/`` so the API's access
control covers them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from imgstream.api_models import ERROR_RESPONSES
from imgstream.auth import Caller, caller, operator
from imgstream.errors import error_response
from imgstream.fleet_snapshot import Monitor
from imgstream.middleware.http_metrics import HttpMetrics
from imgstream.prometheus import exposition
from imgstream.services import STATIC_DIR, services_of

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

router = APIRouter()


def install(app: FastAPI) -> None:
    """Add the operator routes, and count this process's HTTP requests (outermost, so
    refusals by the other middleware are counted too)."""
    registry = CollectorRegistry()
    app.state.http_metrics = registry
    app.include_router(router)
    app.add_middleware(HttpMetrics, registry=registry)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(operator)])
async def metrics(request: Request) -> Response:
    """Fleet figures from Redis plus this process's HTTP figures. While Redis is unreachable
    the HTTP figures are still exposed, with ``imgstream_redis_up 0``."""
    http: CollectorRegistry = request.app.state.http_metrics
    try:
        snapshot = await Monitor.of(services_of(request).deployment).snapshot(rates=False)
    except (RedisConnectionError, RedisTimeoutError):
        snapshot = None
    return Response(exposition(snapshot, http), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/stats",
    summary="Queue, workers, throughput, failures and storage as JSON",
    responses=ERROR_RESPONSES,
)
async def stats(request: Request, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
    """Everything for an operator; for an ordinary key the figures, without other callers'
    job ids, errors and dead letters."""
    snapshot = await Monitor.of(services_of(request).deployment).snapshot()
    view = snapshot.to_json()
    if not who.sees_everything:
        view["recent_failures"] = []
        view["dead_letters"] = []
        view["webhooks"]["undeliverable"] = []
    return view


@router.post(
    "/api/dead-letters/{entry_id}/retry",
    summary="Queue a dead-lettered job again",
    status_code=202,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(operator)],
)
async def retry_dead_letter(request: Request, entry_id: str) -> JSONResponse:
    services = services_of(request)
    new_entry = None
    if _ENTRY_ID.fullmatch(entry_id):
        new_entry = await services.deployment.dead_letters.retry(entry_id)
    if new_entry is None:
        return error_response(404, "not_found", "no such dead letter")
    return JSONResponse({"entry": new_entry}, status_code=202)


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})
