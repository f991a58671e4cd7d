"""The shape of one deployment's jobs queue: its streams, its group, how a job finds its lane.

``QueueLayout`` is the part of ``JobQueue`` every side shares (the producer in ``producer``,
the consumer in ``queue``, the group upkeep in ``group_upkeep``): the partitions and lanes
(``docs/wire-format.md``), the scripts, the look-ups of job hashes, and the write that must
survive its master (``Replication``). Every process of a deployment must agree on it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from imgstream.connection import load_script, run_replicated
from imgstream.deliveries import Delivery, Lane, MalformedDelivery, ValidDelivery
from imgstream.jobs import JobRecord, StreamEntry, WireError, lane_of, new_job_id
from imgstream.keys import Keys, partition_of, partition_of_scope


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must acknowledge a write that must survive its master
    (``IMGSTREAM_REDIS_WAIT_REPLICAS``), and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000


class QueueLayout:
    """The jobs streams, their consumer group and the job hashes of one deployment.

    ``partitions`` and ``lanes`` give the layout (every process of a deployment must agree on
    them); ``served`` names the lanes this process consumes (default: all). With the
    defaults there is one stream, ``keys.stream``, exactly the layout of a deployment that
    sets none of the scaling settings.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        *,
        partitions: int = 1,
        lanes: Sequence[str] = ("",),
        served: Collection[str] | None = None,
        replication: Replication | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys.partition(0)
        self.group = group
        self.partitions = partitions
        self.lanes = tuple(
            Lane(part, lane, keys.partition(part).lane(lane))
            for lane in lanes
            for part in range(partitions)
        )
        """Every stream of the layout, lane by lane, partition by partition."""
        self.served = tuple(
            lane for lane in self.lanes if served is None or lane.operation in served
        )
        """The streams this process consumes."""
        self.per_operation = tuple(lanes) != ("",)
        self._by_stream = {lane.stream: lane for lane in self.lanes}
        self._next = 0
        self._idle = False
        self._by_partition = [
            [lane.stream for lane in self.served if lane.part == part]
            for part in range(partitions)
            if any(lane.part == part for lane in self.served)
        ]
        """The served streams, partition by partition: each list is in one slot."""
        self._next_partition = random.randrange(partitions)
        self.replication = replication or Replication()
        self._enqueue = load_script(redis, "enqueue")
        self._enqueue_done = load_script(redis, "enqueue_done")
        self._start = load_script(redis, "start")
        self._finish = load_script(redis, "finish")
        self._heartbeat = load_script(redis, "heartbeat")

    def lane_for(self, job_id: str, operations: str) -> Lane:
        """The stream a job goes to: its id's partition, its heaviest step's lane."""
        part = partition_of(job_id)
        operation = lane_of(operations) if self.per_operation else ""
        return Lane(part, operation, self.keys.partition(part).lane(operation))

    def new_job_id(self, scope: str | None = None) -> str:
        """A fresh job id in the next partition in turn (from a random one: producers do not
        move in step), or, for an idempotency ``scope``, in the scope's partition (where its
        record is kept with the job)."""
        if self.partitions == 1:
            return new_job_id()
        if scope is not None:
            return new_job_id(partition_of_scope(scope, self.partitions))
        self._next_partition = (self._next_partition + 1) % self.partitions
        return new_job_id(self._next_partition)

    async def ensure_group(self) -> None:
        """Create every stream and its group if missing; harmless when they exist."""
        for lane in self.lanes:
            await self._ensure_group(lane.stream)

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def eviction_policy(self) -> str:
        """Redis's ``maxmemory-policy``, from ``INFO`` (``CONFIG`` may be disabled)."""
        info = await self.redis.info("memory")
        return str(info.get("maxmemory_policy", ""))

    async def _durably(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        """``script``'s reply and how many replicas acknowledged it (WAIT on its connection
        when replication is required; else no wait, and the count is the requirement, 0)."""
        if not self.replication.replicas:
            return await script(keys=keys, args=args), 0
        return await run_replicated(
            self.redis,
            script,
            keys,
            args,
            replicas=self.replication.replicas,
            timeout_ms=self.replication.timeout_ms,
        )

    async def time_left(self, job_id: str, default: int) -> int:
        """Seconds until the job's hash expires; ``default`` while it has no expiry."""
        seconds = int(await self.redis.ttl(self.keys.job(job_id)))
        return default if seconds == -1 else max(0, seconds)

    async def get_job(self, job_id: str) -> JobRecord | None:
        fields = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return JobRecord.from_hash(job_id, fields) if fields else None

    async def get_jobs(self, job_ids: Collection[str]) -> list[JobRecord | None]:
        """``get_job`` of each id, in one round trip (the jobs may be in any partition)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            replies = cast(list[dict[str, str]], await pipe.execute())
        return [
            JobRecord.from_hash(job_id, fields) if fields else None
            for job_id, fields in zip(job_ids, replies, strict=True)
        ]

    async def backlog(self) -> int:
        """Entries not yet acknowledged (waiting or in flight), in every stream."""
        return sum([int(await self.redis.xlen(lane.stream)) for lane in self.lanes])

    def _partition_keys(self, delivery: Delivery) -> Keys:
        return self.keys.partition(self._by_stream[delivery.stream].part)

    def _delivery(self, stream: str, entry_id: str, fields: Mapping[str, str] | None) -> Delivery:
        try:
            entry = StreamEntry.from_fields(fields or {})
        except WireError as exc:
            return MalformedDelivery(entry_id, str(exc), stream)
        part = self._by_stream[stream].part
        if partition_of(entry.job_id) != part:
            problem = f"job {entry.job_id} belongs to partition {partition_of(entry.job_id)}"
            return MalformedDelivery(entry_id, f"{problem}, not to {part}", stream)
        return ValidDelivery(entry_id, entry, stream)
