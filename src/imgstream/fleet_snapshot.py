"""What the fleet is doing, read from Redis on demand: the one source of the stats API, the
dashboard, ``imgstream stats`` and the Prometheus gauges.

Everything comes from what Redis already knows — the stream and its group (``XLEN``,
``XINFO GROUPS``, ``XINFO CONSUMERS``), the dead-letter stream — plus the counters
``job_counters`` keeps and the storage figures the janitor leaves. A snapshot costs one pipelined
round trip (two when throughput is asked for), so it is cheap enough to take on every
scrape and every dashboard refresh.

A worker "is live" when its heartbeat (``heartbeats``) arrived within the visibility timeout,
the time after which the fleet treats an entry's holder as dead too. Its ``idle`` time is
the group's: since it last read or claimed entries (unknown until it was first served one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from imgstream.deadletters import DeadLetter, decode_dead_letters
from imgstream.deliveries import Lane
from imgstream.deployment import Deployment
from imgstream.heartbeats import Presence
from imgstream.job_counters import Counters, Failure, Rates, read_rates, sum_counters
from imgstream.keys import Keys
from imgstream.storage import StorageUse
from imgstream.webhook_queue import Undeliverable, WebhookQueue

THROUGHPUT_WINDOW = 60
"""Seconds over which the stats report throughput and failure rate."""
HISTORY_WINDOW = 10 * 60
"""Seconds of per-bucket outcome counts the stats carry for the dashboard's chart."""
DEAD_LETTERS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    pending: int
    """Entries delivered to it and not yet finished."""
    idle_seconds: float | None
    """Since it last read or claimed entries; None while the group does not know it."""
    seen_seconds: float | None
    """Since its last heartbeat; None when it sent none (it died long ago, or never beat)."""
    live: bool


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """Redis's memory against its ``maxmemory`` (0: no limit) and the policy at the limit."""

    used_bytes: int
    max_bytes: int
    policy: str

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> RedisMemory:
        return cls(
            used_bytes=int(info.get("used_memory", 0)),
            max_bytes=int(info.get("maxmemory", 0)),
            policy=str(info.get("maxmemory_policy", "")),
        )


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """One jobs stream (a partition's, of one lane) as its group sees it."""

    partition: int
    operation: str
    """The lane; "" when every operation shares the partition's one stream."""
    stream: str
    backlog: int
    waiting: int
    pending: int


@dataclass
class Snapshot:
    """The state of one deployment at ``at`` (Unix time)."""

    at: float
    backlog: int
    """Entries in the stream: waiting + pending (what ``IMGSTREAM_MAX_BACKLOG`` limits)."""
    waiting: int
    """Entries not yet delivered to any worker (the group's lag)."""
    pending: int
    """Entries delivered to a worker and not yet finished."""
    dead_letters: int
    consumers: list[Consumer]
    counters: Counters
    failures: list[Failure]
    letters: list[DeadLetter]
    storage: StorageUse | None
    rates: Rates | None = field(default=None)
    memory: RedisMemory | None = field(default=None)
    webhooks_pending: int = 0
    """Webhooks waiting for a first or next try."""
    undeliverable: list[Undeliverable] = field(default_factory=list)
    """The latest webhooks given up on, newest first."""
    streams: list[StreamFigures] = field(default_factory=list)
    """Each jobs stream's figures (the totals above are their sums)."""
    partition_dead_letters: list[int] = field(default_factory=list)
    """Dead letters of each partition."""

    @property
    def live_consumers(self) -> int:
        return sum(1 for consumer in self.consumers if consumer.live)

    def to_json(self) -> dict[str, Any]:
        """The shape of ``GET /api/stats`` and ``imgstream stats --json`` (docs/operating.md)."""
        counters = self.counters
        operations = sorted(
            set(counters.submitted) | {op for _, op in counters.jobs} | set(counters.processing)
        )
        by_operation = {}
        for op in operations:
            histogram = counters.processing.get(op)
            by_operation[op] = {
                "submitted": counters.submitted.get(op, 0),
                "done": counters.jobs.get(("done", op), 0),
                "failed": counters.jobs.get(("failed", op), 0),
                "mean_processing_seconds": (
                    round(histogram.sum / histogram.count, 4)
                    if histogram and histogram.count
                    else None
                ),
            }
        e2e = counters.end_to_end
        return {
            "at": round(self.at, 3),
            "queue": {
                "backlog": self.backlog,
                "waiting": self.waiting,
                "pending": self.pending,
                "dead_letters": self.dead_letters,
            },
            "streams": [asdict(figures) for figures in self.streams],
            "partitions": self._partitions(),
            "consumers": [asdict(consumer) for consumer in self.consumers],
            "live_consumers": self.live_consumers,
            "jobs": {
                "submitted": sum(counters.submitted.values()),
                "done": counters.total("done"),
                "failed": counters.total("failed"),
                "mean_end_to_end_seconds": round(e2e.sum / e2e.count, 4) if e2e.count else None,
                "cache_hits": counters.cache_hits,
                "by_operation": by_operation,
            },
            "throughput": self._throughput(),
            "recent_failures": [asdict(failure) for failure in self.failures],
            "dead_letters": [asdict(letter) for letter in self.letters],
            "storage": asdict(self.storage) if self.storage else None,
            "redis_memory": asdict(self.memory) if self.memory else None,
            "webhooks": {
                "pending": self.webhooks_pending,
                "undeliverable": [asdict(failure) for failure in self.undeliverable],
            },
        }

    def _partitions(self) -> list[dict[str, int]]:
        """Each partition's backlog, waiting, pending and dead letters (summed over lanes)."""
        shown = []
        for part, dead in enumerate(self.partition_dead_letters):
            mine = [figures for figures in self.streams if figures.partition == part]
            shown.append(
                {
                    "partition": part,
                    "backlog": sum(figures.backlog for figures in mine),
                    "waiting": sum(figures.waiting for figures in mine),
                    "pending": sum(figures.pending for figures in mine),
                    "dead_letters": dead,
                }
            )
        return shown

    def _throughput(self) -> dict[str, Any] | None:
        if self.rates is None:
            return None
        done, failed = self.rates.last(THROUGHPUT_WINDOW)
        finished = done + failed
        return {
            "window_seconds": THROUGHPUT_WINDOW,
            "done": done,
            "failed": failed,
            "per_second": round(finished / THROUGHPUT_WINDOW, 3),
            "failure_rate": round(failed / finished, 4) if finished else 0.0,
            "history": asdict(self.rates),
        }


class Monitor:
    """Read-only view of one deployment's queue, workers and counters."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        *,
        live_within: float,
        partitions: int = 1,
        lanes: Sequence[Lane] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.live_within = live_within
        self.partitions = partitions
        self.lanes = tuple(lanes) if lanes is not None else (Lane(0, "", keys.stream),)
        """The streams shown (default: the one of a single-stream layout)."""

    @classmethod
    def of(cls, deployment: Deployment) -> Monitor:
        """A reader of ``deployment``'s figures over its connection; a worker unheard of for
        the visibility timeout counts as gone."""
        settings = deployment.settings
        return cls(
            deployment.redis,
            deployment.keys,
            settings.group,
            live_within=settings.visibility_timeout,
            partitions=settings.partitions,
            lanes=deployment.queue.lanes,
        )

    async def snapshot(self, *, rates: bool = True) -> Snapshot:
        keys = self.keys
        parts = [keys.partition(part) for part in range(self.partitions)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for lane in self.lanes:
                pipe.xlen(lane.stream)
                pipe.xinfo_groups(lane.stream)
                pipe.xinfo_consumers(lane.stream, self.group)
            for part in parts:
                pipe.xlen(part.dead)
                pipe.hgetall(part.metrics)
                pipe.xrevrange(part.dead, count=DEAD_LETTERS_SHOWN)
                pipe.zcard(part.webhooks)
            pipe.lrange(keys.failures, 0, -1)
            pipe.hgetall(keys.storage)
            pipe.zrange(keys.workers, 0, -1, withscores=True)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        lane_replies = replies[: 3 * len(self.lanes)]
        part_replies = replies[3 * len(self.lanes) : -3]
        failures, storage, beats = replies[-3:]
        # TIME and INFO are asked outside the pipeline: a cluster client refuses them in one.
        clock: Any = await self.redis.time()
        memory = await self._memory()
        for reply in (*lane_replies[::3], *part_replies, failures, storage, beats):
            if isinstance(reply, Exception):
                raise reply
        streams: list[StreamFigures] = []
        consumer_list: list[dict[str, Any]] = []
        for index, lane in enumerate(self.lanes):
            backlog, groups, consumers = lane_replies[3 * index : 3 * index + 3]
            group = _group_info(groups, self.group)
            if isinstance(consumers, Exception) and not isinstance(consumers, ResponseError):
                raise consumers
            if not isinstance(consumers, ResponseError):
                consumer_list += consumers
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            waiting = int(lag) if lag is not None else max(0, int(backlog) - pending)
            streams.append(
                StreamFigures(
                    lane.part, lane.operation, lane.stream, int(backlog), waiting, pending
                )
            )
        dead_counts = [int(reply) for reply in part_replies[0::4]]
        letters = sorted(
            (letter for reply in part_replies[2::4] for letter in decode_dead_letters(reply)),
            key=lambda letter: letter.failed_at,
            reverse=True,
        )[:DEAD_LETTERS_SHOWN]
        now = float(clock[0]) + float(clock[1]) / 1e6
        webhooks = WebhookQueue(self.redis, keys)
        return Snapshot(
            at=now,
            backlog=sum(figures.backlog for figures in streams),
            waiting=sum(figures.waiting for figures in streams),
            pending=sum(figures.pending for figures in streams),
            dead_letters=sum(dead_counts),
            consumers=self._consumers(consumer_list, beats, now),
            counters=Counters.from_hash(sum_counters(part_replies[1::4])),
            failures=[f for f in map(Failure.from_json, failures) if f is not None],
            letters=letters,
            storage=StorageUse.from_hash(storage),
            rates=await read_rates(self.redis, keys, now=now, window=HISTORY_WINDOW)
            if rates
            else None,
            memory=memory,
            webhooks_pending=sum(int(reply) for reply in part_replies[3::4]),
            undeliverable=await webhooks.undeliverable(DEAD_LETTERS_SHOWN),
            streams=streams,
            partition_dead_letters=dead_counts,
        )

    async def _memory(self) -> RedisMemory | None:
        """Redis's memory figures, or None when ``INFO`` is refused (it may be disabled)."""
        try:
            info: Any = await self.redis.info("memory")
        except ResponseError:
            return None
        return RedisMemory.from_info(info)

    async def worker_seen_within(self, seconds: float) -> bool:
        """Has any worker's heartbeat arrived in the last ``seconds``?"""
        return await Presence(self.redis, self.keys).seen_within(seconds)

    def _consumers(
        self, group: list[dict[str, Any]], beats: list[tuple[str, float]], now: float
    ) -> list[Consumer]:
        """Consumers the group knows and workers that sent a heartbeat, by name."""
        idle: dict[str, float] = {}
        pending: dict[str, int] = {}
        for item in group:  # a consumer of several streams: its freshest idle, its total
            name = str(item["name"])
            idle[name] = min(idle.get(name, math.inf), int(item["idle"]) / 1000)
            pending[name] = pending.get(name, 0) + int(item["pending"])
        seen = {str(name): max(0.0, now - score / 1000) for name, score in beats}
        return [
            Consumer(
                name=name,
                pending=pending.get(name, 0),
                idle_seconds=round(idle[name], 3) if name in idle else None,
                seen_seconds=round(seen[name], 3) if name in seen else None,
                live=name in seen and seen[name] < self.live_within,
            )
            for name in sorted(idle.keys() | seen.keys())
        ]


def _group_info(groups: Any, name: str) -> dict[str, Any]:
    if isinstance(groups, ResponseError):
        return {}  # the stream does not exist yet
    if isinstance(groups, Exception):
        raise groups
    for group in groups:
        if group.get("name") == name:
            return dict(group)
    return {}
