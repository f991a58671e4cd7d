"""Prometheus exposition: the fleet's figures from a ``Snapshot``, and this process's HTTP.

Fleet figures (jobs, durations, queue, workers) are read from Redis at scrape time and
turned into metric families by ``FleetCollector``, so every API instance reports the same
fleet-wide values however many worker processes and machines there are. HTTP figures are
this API process's own (``HttpMetrics``); Prometheus adds the ``instance`` label that
tells the processes apart. Labels never carry job ids: routes are path templates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgstream.metrics import END_TO_END_BUCKETS, PROCESSING_BUCKETS
from imgstream.monitor import Snapshot

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "<unmatched>"


class FleetCollector(Collector):
    """The families of one snapshot; a fresh one is registered for each scrape. Without a
    snapshot (Redis unreachable) only ``imgstream_redis_up 0`` is reported."""

    def __init__(self, snapshot: Snapshot | None) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        yield GaugeMetricFamily(
            "imgstream_redis_up",
            "Whether this API process could read the fleet's figures from Redis.",
            value=0 if snapshot is None else 1,
        )
        if snapshot is None:
            return
        counters = snapshot.counters

        submitted = CounterMetricFamily(
            "imgstream_jobs_submitted",
            "Jobs accepted by the API (202), by operation.",
            labels=["operation"],
        )
        for operation, count in sorted(counters.submitted.items()):
            submitted.add_metric([operation], count)
        yield submitted

        jobs = CounterMetricFamily(
            "imgstream_jobs",
            "Jobs that ended, by final status (done, failed) and operation.",
            labels=["status", "operation"],
        )
        for (status, operation), count in sorted(counters.jobs.items()):
            jobs.add_metric([status, operation], count)
        yield jobs

        processing = HistogramMetricFamily(
            "imgstream_job_processing_seconds",
            "Time a worker spent on a job's last attempt, by operation.",
            labels=["operation"],
        )
        for operation, histogram in sorted(counters.processing.items()):
            processing.add_metric(
                [operation], histogram.cumulative(PROCESSING_BUCKETS), histogram.sum
            )
        yield processing

        yield CounterMetricFamily(
            "imgstream_cache_hits",
            "Jobs done at once from the result cache, no worker involved (also counted as "
            "submitted and done).",
            value=counters.cache_hits,
        )

        e2e = counters.end_to_end
        end_to_end = HistogramMetricFamily(
            "imgstream_job_end_to_end_seconds",
            "Time from a job's stream entry (accepted) to its result being recorded (done).",
        )
        end_to_end.add_metric([], e2e.cumulative(END_TO_END_BUCKETS), e2e.sum)
        yield end_to_end

        for name, documentation, value in (
            ("imgstream_queue_backlog", "Entries in the jobs stream: waiting + pending.",
             snapshot.backlog),
            ("imgstream_queue_waiting", "Entries not yet delivered to a worker (group lag).",
             snapshot.waiting),
            ("imgstream_queue_pending", "Entries delivered to a worker and not yet finished.",
             snapshot.pending),
            ("imgstream_dead_letters", "Entries in the dead-letter stream.",
             snapshot.dead_letters),
            ("imgstream_consumers", "Workers seen within the visibility timeout.",
             snapshot.live_consumers),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, documentation, value=value)

        pending = GaugeMetricFamily(
            "imgstream_consumer_pending",
            "Entries each consumer of the group holds (a dead worker's stay until taken over).",
            labels=["consumer"],
        )
        for consumer in snapshot.consumers:
            pending.add_metric([consumer.name], consumer.pending)
        yield pending

        if snapshot.storage is not None:
            objects = GaugeMetricFamily(
                "imgstream_storage_objects", "Stored files, by kind.", labels=["kind"]
            )
            used = GaugeMetricFamily(
                "imgstream_storage_bytes", "Bytes of stored files, by kind.", labels=["kind"]
            )
            storage = snapshot.storage
            objects.add_metric(["original"], storage.originals)
            objects.add_metric(["result"], storage.results)
            used.add_metric(["original"], storage.originals_bytes)
            used.add_metric(["result"], storage.results_bytes)
            objects.add_metric(["temporary"], storage.temporary)
            used.add_metric(["temporary"], storage.temporary_bytes)
            yield objects
            yield used

        if snapshot.memory is not None:
            yield GaugeMetricFamily(
                "imgstream_redis_memory_used_bytes",
                "Memory Redis uses (INFO used_memory).",
                value=snapshot.memory.used_bytes,
            )
            yield GaugeMetricFamily(
                "imgstream_redis_memory_max_bytes",
                "Redis maxmemory (0: no limit); at it, noeviction refuses writes.",
                value=snapshot.memory.max_bytes,
            )


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


def exposition(snapshot: Snapshot | None, http: CollectorRegistry) -> bytes:
    """The text format of one scrape: the fleet (from ``snapshot``) and this process's HTTP."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(snapshot))
    return generate_latest(registry) + generate_latest(http)
