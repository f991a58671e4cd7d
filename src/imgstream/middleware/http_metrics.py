"""This API process's HTTP figures for ``/metrics``: requests by route template, method and
status, and the time to answer. Labels never carry job ids: routes are path templates."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "<unmatched>"


class HttpMetrics:
    """Pure-ASGI middleware counting requests by route template, method and status."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "imgstream_http_requests",
            "HTTP requests answered by this API process.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "imgstream_http_request_duration_seconds",
            "Time to answer an HTTP request, until the response started.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises
        answered_after: float | None = None

        async def send_and_observe(message: Message) -> None:
            nonlocal status, answered_after
            if message["type"] == "http.response.start":
                status = int(message["status"])
                answered_after = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            route, method = _route(scope), scope["method"]
            if answered_after is None:
                answered_after = time.perf_counter() - started
            self.latency.labels(route, method).observe(answered_after)
            self.requests.labels(route, method, str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path or "/"
    return UNMATCHED_ROUTE
