"""Fleet-wide job counters in Redis: written by whichever process sees the event, read by all.

Several worker processes on several machines finish jobs; an API instance must still report
the totals of the whole fleet. So the counters live in Redis, not in a process: one hash
``{prefix}:metrics`` holds job counts by status and operation and the buckets, sums and
counts of the duration histograms; ``{prefix}:rate:<t>`` hashes count outcomes per
``RATE_BUCKET_SECONDS`` (they expire after ``RATE_KEEP_SECONDS``) for throughput; the list
``{prefix}:failures`` keeps the latest failures with their reasons.

The job counts are exact: a job has one final outcome. This module names their fields
(``submitted_field``, ``outcome_field``) and the delivery scripts change them in the same
step as the job itself: ``enqueue.lua`` (or ``start.lua``, for a job a producer only
``XADD``-ed) counts it submitted, ``finish.lua`` counts its outcome when it records it, and
``requeue.lua`` takes back the failure of a dead letter it queues again, so a job that
failed, was retried and then succeeded counts once, as done: submitted = done + failed +
outstanding.

Durations, throughput and the failure list are best effort: a worker tallies them *after*
``finish.lua`` recorded the outcome and only when it did, and sends the tally in one
pipeline when its batch of entries ends (or after ``COUNTERS_FLUSH_SECONDS``), so they lag
the outcomes by at most that. A worker that dies before it sends, or a Redis outage at that
moment, loses those samples (the job's outcome and its count are never at risk; a failure
here is logged and ignored).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from imgstream.keys import Keys

log = logging.getLogger("imgstream.metrics")

OPERATIONS: Final = ("blur", "grayscale", "resize")
INVALID_OPERATION: Final = "invalid"
PROCESSING_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
END_TO_END_BUCKETS: Final = (
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    math.inf,
)
RATE_BUCKET_SECONDS: Final = 5
RATE_KEEP_SECONDS: Final = 15 * 60
RECENT_FAILURES: Final = 50
OUTCOMES: Final = ("done", "failed")
CACHE_HITS_FIELD: Final = "cache:hits"
"""The counter of jobs served from the result cache (counted done and submitted too)."""


def operation_label(operations_json: str) -> str:
    """The ``operation`` label of a job: the kinds of step in its pipeline, sorted, joined by
    ``+`` (``resize``, ``grayscale+resize``); ``invalid`` when the steps don't parse.

    Sorted and deduplicated so the label has at most 8 values, whatever the pipelines.
    """
    try:
        steps = json.loads(operations_json)
        kinds = {step["op"] for step in steps}
    except (ValueError, TypeError, KeyError):
        return INVALID_OPERATION
    if not kinds or not kinds <= set(OPERATIONS):
        return INVALID_OPERATION
    return "+".join(sorted(kinds))


def submitted_field(operations_json: str) -> str:
    """The counter of jobs accepted, for this job's ``operation`` label."""
    return f"submitted:{operation_label(operations_json)}"


def outcome_field(status: str, operations_json: str) -> str:
    """The counter of jobs that ended ``status`` (``done``/``failed``), by operation label."""
    return f"jobs:{status}:{operation_label(operations_json)}"


def bucket_bound(value: float, buckets: Sequence[float]) -> str:
    """The name of the smallest bucket holding ``value`` (``le`` as Prometheus writes it)."""
    for bound in buckets:
        if value <= bound:
            return le_name(bound)
    return le_name(math.inf)


def le_name(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass
class Histogram:
    """A histogram decoded from the hash: per-bucket (not cumulative) counts, sum, count."""

    buckets: dict[str, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0

    def cumulative(self, bounds: Sequence[float]) -> list[tuple[str, int]]:
        total = 0
        result = []
        for bound in bounds:
            total += self.buckets.get(le_name(bound), 0)
            result.append((le_name(bound), total))
        return result


@dataclass
class Counters:
    """Everything ``{prefix}:metrics`` holds, decoded (pure: tested without Redis)."""

    submitted: dict[str, int] = field(default_factory=dict)
    """By operation."""
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    """By (status, operation)."""
    processing: dict[str, Histogram] = field(default_factory=dict)
    """By operation."""
    end_to_end: Histogram = field(default_factory=Histogram)
    cache_hits: int = 0
    """Jobs done at once from the result cache."""

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Counters:
        """Field names: ``submitted:<op>``, ``jobs:<status>:<op>``,
        ``processing:<op>:{bucket:<le>|sum|count}``, ``e2e:{bucket:<le>|sum|count}``."""
        counters = cls()
        for name, raw in fields.items():
            parts = name.split(":")
            try:
                if parts[0] == "submitted" and len(parts) == 2:
                    counters.submitted[parts[1]] = int(raw)
                elif parts[0] == "jobs" and len(parts) == 3:
                    counters.jobs[(parts[1], parts[2])] = int(raw)
                elif parts[0] == "processing" and len(parts) >= 3:
                    histogram = counters.processing.setdefault(parts[1], Histogram())
                    _decode_histogram_field(histogram, parts[2:], raw)
                elif name == CACHE_HITS_FIELD:
                    counters.cache_hits = int(raw)
                elif parts[0] == "e2e" and len(parts) >= 2:
                    _decode_histogram_field(counters.end_to_end, parts[1:], raw)
            except ValueError:
                log.warning("ignoring malformed metrics field %s=%r", name, raw)
        return counters

    def total(self, status: str) -> int:
        return sum(count for (state, _), count in self.jobs.items() if state == status)


def sum_counters(hashes: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The metrics hashes of several partitions as one: each field summed (counts stay
    integers, sums stay decimals), for ``Counters.from_hash``."""
    total: dict[str, str] = {}
    for fields in hashes:
        for name, raw in fields.items():
            if name not in total:
                total[name] = raw
                continue
            try:
                total[name] = str(int(total[name]) + int(raw))
            except ValueError:
                try:
                    total[name] = repr(float(total[name]) + float(raw))
                except ValueError:
                    log.warning("ignoring malformed metrics field %s=%r", name, raw)
    return total


def _decode_histogram_field(histogram: Histogram, parts: Sequence[str], raw: str) -> None:
    if parts[0] == "bucket" and len(parts) == 2:
        histogram.buckets[parts[1]] = int(raw)
    elif parts[0] == "sum":
        histogram.sum = float(raw)
    elif parts[0] == "count":
        histogram.count = int(raw)


@dataclass(frozen=True, slots=True)
class Failure:
    job: str
    error_code: str
    error: str
    operation: str
    consumer: str
    at: float
    """Unix time."""

    @classmethod
    def from_json(cls, text: str) -> Failure | None:
        try:
            data = json.loads(text)
            return cls(
                job=str(data["job"]),
                error_code=str(data.get("error_code", "")),
                error=str(data.get("error", "")),
                operation=str(data.get("operation", "")),
                consumer=str(data.get("consumer", "")),
                at=float(data.get("at", 0)),
            )
        except (ValueError, TypeError, KeyError):
            return None


COUNTERS_FLUSH_SECONDS: Final = 1.0
"""How long a worker may hold counted durations before sending them (``JobMetrics.due``)."""


@dataclass
class _Tally:
    """Counts not yet sent: summed per hash field, so a batch of jobs costs one pipeline."""

    increments: dict[tuple[str, str], int] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)
    rate_keys: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    since: float | None = None

    def add(self, name: str, field_name: str, amount: int = 1) -> None:
        self.increments[name, field_name] = self.increments.get((name, field_name), 0) + amount

    def add_float(self, name: str, field_name: str, amount: float) -> None:
        self.sums[name, field_name] = self.sums.get((name, field_name), 0.0) + amount


class JobMetrics:
    """Write side of the fleet's durations and throughput. Best effort: it never raises for
    Redis trouble, so observing a job can never fail it.

    ``count`` only adds a recorded outcome to a tally kept in the process; ``flush`` sends the
    whole tally in one pipeline (the same totals as one pipeline per job: fields are summed).
    A worker counts every outcome of a batch and flushes once the batch ends, or sooner when
    the tally is ``due``.
    """

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._tally = _Tally()

    def count(
        self,
        *,
        job_id: str,
        operations_json: str,
        status: str,
        now: float,
        processing_seconds: float | None,
        end_to_end_seconds: float | None,
        error_code: str = "",
        error: str = "",
        consumer: str = "",
    ) -> None:
        """Tally one recorded outcome's durations, its throughput bucket, and a failure's
        reason (the outcome itself was counted by ``finish.lua``)."""
        operation = operation_label(operations_json)
        name = self.keys.of_job(job_id).metrics
        tally = self._tally
        if tally.since is None:
            tally.since = time.monotonic()
        if processing_seconds is not None:
            prefix = f"processing:{operation}"
            bound = bucket_bound(processing_seconds, PROCESSING_BUCKETS)
            tally.add(name, f"{prefix}:bucket:{bound}")
            tally.add_float(name, f"{prefix}:sum", processing_seconds)
            tally.add(name, f"{prefix}:count")
        if status == "done" and end_to_end_seconds is not None:
            bound = bucket_bound(end_to_end_seconds, END_TO_END_BUCKETS)
            tally.add(name, f"e2e:bucket:{bound}")
            tally.add_float(name, "e2e:sum", end_to_end_seconds)
            tally.add(name, "e2e:count")
        rate = self.keys.rate(int(now) // RATE_BUCKET_SECONDS * RATE_BUCKET_SECONDS)
        tally.add(rate, status)
        tally.rate_keys.add(rate)
        if status == "failed":
            record = {
                "job": job_id,
                "error_code": error_code,
                "error": error,
                "operation": operation,
                "consumer": consumer,
                "at": round(now, 3),
            }
            tally.failures.append(json.dumps(record))

    def due(self) -> bool:
        """True when the oldest outcome in the tally waited ``COUNTERS_FLUSH_SECONDS``."""
        since = self._tally.since
        return since is not None and time.monotonic() - since >= COUNTERS_FLUSH_SECONDS

    async def flush(self) -> None:
        """Send the tally in one pipeline; a Redis error loses it (logged), never raises."""
        tally, self._tally = self._tally, _Tally()
        if tally.since is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (name, field_name), amount in tally.increments.items():
                    pipe.hincrby(name, field_name, amount)
                for (name, field_name), total in tally.sums.items():
                    pipe.hincrbyfloat(name, field_name, total)
                for rate in tally.rate_keys:
                    pipe.expire(rate, RATE_KEEP_SECONDS)
                if tally.failures:
                    pipe.lpush(self.keys.failures, *tally.failures)
                    pipe.ltrim(self.keys.failures, 0, RECENT_FAILURES - 1)
                await pipe.execute()
        except RedisError as exc:
            log.warning("metrics not recorded (%s)", exc)


@dataclass(frozen=True, slots=True)
class Rates:
    """Outcomes per ``RATE_BUCKET_SECONDS`` bucket, oldest first, ending with the current one."""

    start: int
    bucket_seconds: int
    done: list[int]
    failed: list[int]

    def last(self, seconds: int) -> tuple[int, int]:
        """Done and failed in the last ``seconds``, counting complete buckets only."""
        buckets = max(1, seconds // self.bucket_seconds)
        complete = slice(-1 - buckets, -1)
        return sum(self.done[complete]), sum(self.failed[complete])


async def read_rates(redis: Redis, keys: Keys, *, now: float, window: int) -> Rates:
    """The outcome counts of the last ``window`` seconds, bucket by bucket."""
    current = int(now) // RATE_BUCKET_SECONDS * RATE_BUCKET_SECONDS
    count = window // RATE_BUCKET_SECONDS + 1
    starts = [current - RATE_BUCKET_SECONDS * index for index in range(count - 1, -1, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hmget(keys.rate(start), *OUTCOMES)
        replies: list[Any] = await pipe.execute()
    done = [int(reply[0] or 0) for reply in replies]
    failed = [int(reply[1] or 0) for reply in replies]
    return Rates(start=starts[0], bucket_seconds=RATE_BUCKET_SECONDS, done=done, failed=failed)
