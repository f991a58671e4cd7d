"""Prometheus exposition: the fleet's figures from a ``Snapshot``, and this process's HTTP.

Fleet figures (jobs, durations, queue, workers) are read from Redis at scrape time and
turned into metric families by ``FleetCollector``, so every API instance reports the same
fleet-wide values however many worker processes and machines there are. HTTP figures are
this API process's own (``middleware.http_metrics``); Prometheus adds the ``instance`` label that
tells the processes apart. Labels never carry job ids: routes are path templates.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from imgstream.fleet_snapshot import Snapshot
from imgstream.job_counters import END_TO_END_BUCKETS, PROCESSING_BUCKETS


def _stream_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Each jobs stream's backlog, lag and pending, labelled by partition and lane ("" when
    operations share a stream), and each partition's dead letters: the sums are above."""
    labels = ["partition", "lane"]
    families = {
        "backlog": GaugeMetricFamily(
            "imgstream_stream_backlog",
            "Entries in one jobs stream: waiting + pending.",
            labels=labels,
        ),
        "waiting": GaugeMetricFamily(
            "imgstream_stream_waiting",
            "Entries of one stream not yet delivered (lag).",
            labels=labels,
        ),
        "pending": GaugeMetricFamily(
            "imgstream_stream_pending",
            "Entries of one stream delivered, not finished.",
            labels=labels,
        ),
    }
    for figures in snapshot.streams:
        names = [str(figures.partition), figures.operation]
        families["backlog"].add_metric(names, figures.backlog)
        families["waiting"].add_metric(names, figures.waiting)
        families["pending"].add_metric(names, figures.pending)
    yield from families.values()
    dead = GaugeMetricFamily(
        "imgstream_partition_dead_letters", "Dead letters of one partition.", labels=["partition"]
    )
    for part, count in enumerate(snapshot.partition_dead_letters):
        dead.add_metric([str(part)], count)
    yield dead


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

        yield from _stream_families(snapshot)

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


def exposition(snapshot: Snapshot | None, http: CollectorRegistry) -> bytes:
    """The text format of one scrape: the fleet (from ``snapshot``) and this process's HTTP."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(snapshot))
    return generate_latest(registry) + generate_latest(http)
