"""Every Redis command about jobs: enqueue, read as a group member, start, finish, look up.

Delivery is at least once: an entry stays pending in the consumer group until the worker
that holds the job's lease has stored the result and recorded the outcome, and the outcome
and the acknowledgement happen in one script. Acknowledged entries are deleted, so a
stream holds outstanding work only and its length is the backlog.

The layout (``docs/wire-format.md``): ``IMGSTREAM_PARTITIONS`` partitions, each under its own
hash tag (``keys``), each with one jobs stream, or one per operation (a *lane*) with
``IMGSTREAM_STREAM_PER_OPERATION``. A job's id names its partition and its steps name its
lane, so the stream it was queued in, its hash, dead letters, expiry set, metrics and
webhook schedule share one tag, and every script touches one Redis Cluster slot. A consumer
reads each of its streams with a command of its own (one ``XREADGROUP`` over several tags
fails with ``CROSSSLOT``), in turn, so none is starved. The job counters change in the same
scripts as the job's status, so a job counts once as submitted and once under its one
final outcome.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from imgstream.connection import load_script, run_replicated, run_together
from imgstream.job_counters import CACHE_HITS_FIELD, outcome_field, submitted_field
from imgstream.jobs import (
    FINAL_STATUSES,
    FROM_CACHE_FIELD,
    Enqueued,
    JobRecord,
    JobStatus,
    OriginalInfo,
    Recorded,
    ResultInfo,
    StreamEntry,
    WireError,
    lane_of,
    new_job_id,
    pairs,
    queued_job_fields,
    queued_state,
    result_fields,
    stream_id_timestamp,
    utc_now,
)
from imgstream.keys import Keys as Keys  # re-exported: most modules take it from here
from imgstream.keys import partition_of, partition_of_scope

log = logging.getLogger(__name__)


class ReplicationLagging(Exception):
    """The job was queued on its master, but fewer replicas than required acknowledged it in
    time: it runs unless that master is lost before its replicas catch up."""

    def __init__(self, job_id: str, acked: int, wanted: int) -> None:
        super().__init__(
            f"job {job_id} was queued, but {acked} of {wanted} Redis replicas confirmed it"
        )
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must acknowledge a write that must survive its master
    (``IMGSTREAM_REDIS_WAIT_REPLICAS``), and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000


class BacklogFull(Exception):
    """The stream already holds as many outstanding entries as the operator allows."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"the queue holds {backlog} outstanding jobs")
        self.backlog = backlog


@dataclass(frozen=True, slots=True)
class Once:
    """An idempotency key as the enqueue script keeps it: whose key (``scope``, a digest of
    the client and the key), what was asked (``request``, a fingerprint) and for how long."""

    scope: str
    request: str
    ttl: int


class Replayed(Exception):
    """The idempotency key names a job already (``job_id``, made for ``request``)."""

    def __init__(self, job_id: str, request: str) -> None:
        super().__init__(f"the idempotency key names job {job_id}")
        self.job_id = job_id
        self.request = request


@dataclass(frozen=True, slots=True)
class Lane:
    """One jobs stream of the layout: partition ``part``'s, for ``operation`` ("": all)."""

    part: int
    operation: str
    stream: str


class EntryRef(NamedTuple):
    """An entry as a consumer holds it: entry ids are unique within a stream only."""

    stream: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class ValidDelivery:
    """An entry handed to this consumer whose fields decode: the only kind a job is started,
    finished or failed with."""

    entry_id: str
    entry: StreamEntry
    stream: str = ""
    """The stream it was read from (whose group holds it pending)."""

    @property
    def job_id(self) -> str:
        return self.entry.job_id

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id)


@dataclass(frozen=True, slots=True)
class MalformedDelivery:
    """An entry handed to this consumer whose fields do not decode (``problem`` says why):
    it is only ever discarded."""

    entry_id: str
    problem: str
    stream: str = ""
    """The stream it was read from (whose group holds it pending)."""
    entry: None = None
    job_id: None = None

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id)


Delivery = ValidDelivery | MalformedDelivery
"""What reading the stream hands a consumer."""


class Starting(NamedTuple):
    """The arguments of one ``JobQueue.start``: a job to start under ``lease``."""

    delivery: ValidDelivery
    lease: str
    consumer: str
    max_attempts: int


def _done(result: ResultInfo) -> dict[str, str]:
    """The outcome fields of a job done with ``result``."""
    return {"status": JobStatus.DONE.value, "finished_at": utc_now(), **result_fields(result)}


class JobQueue:
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

    # Producing.

    async def enqueue(
        self,
        job_id: str,
        entry: StreamEntry,
        *,
        filename: str = "",
        owner: str = "",
        max_backlog: int = 0,
        original: OriginalInfo | None = None,
        once: Once | None = None,
        callback_url: str = "",
    ) -> str:
        """Add the job's hash and stream entry atomically; returns the entry id.

        The original must already be stored: once this returns, a worker may start.
        ``original`` describes it in the job's hash from the start. With ``once``, the
        idempotency record is written in the same step (in the job's partition), and
        ``Replayed`` is raised instead when the record names a job already (then nothing was
        created). ``max_backlog`` bounds the deployment: each partition's streams hold at
        most their share of it. With replication required, ``ReplicationLagging`` is raised
        when too few replicas confirmed the job (it is queued all the same).
        """
        lane = self.lane_for(job_id, entry.operations)
        keys = self.keys.partition(lane.part)
        stream_fields = replace(entry, job_id=job_id)
        job_fields = {
            **queued_job_fields(entry, created_at=utc_now(), filename=filename, owner=owner),
            **(original.to_fields() if original is not None else {}),
            **({"callback_url": callback_url} if callback_url else {}),
        }
        script_keys = [lane.stream, keys.job(job_id), keys.metrics]
        if once is not None:
            script_keys.append(keys.idempotency(once.scope))
        reply, acked = await self._durably(
            self._enqueue,
            script_keys,
            [
                math.ceil(max_backlog / self.partitions),
                submitted_field(entry.operations),
                once.ttl if once else 0,
                job_id,
                once.request if once else "",
                len(stream_fields.to_fields()),
                *pairs(stream_fields.to_fields()),
                *pairs(job_fields),
            ],
        )
        detail = self._enqueued(reply, job_id)
        if acked < self.replication.replicas:
            raise ReplicationLagging(job_id, acked, self.replication.replicas)
        return str(detail)

    async def enqueue_done(
        self,
        job_id: str,
        entry: StreamEntry,
        result: ResultInfo,
        *,
        ttl: int,
        filename: str = "",
        owner: str = "",
        original: OriginalInfo | None = None,
        once: Once | None = None,
        callback_url: str = "",
    ) -> None:
        """Add the hash of a job that is ``done`` at once with ``result`` (a cached one):
        no stream entry, no worker; counted as submitted, done and a cache hit, and expiring
        after ``ttl`` like any finished job. ``once`` as for ``enqueue``."""
        now = utc_now()
        job_fields = {
            **queued_job_fields(entry, created_at=now, filename=filename, owner=owner),
            **(original.to_fields() if original is not None else {}),
            **({"callback_url": callback_url} if callback_url else {}),
            "status": JobStatus.DONE.value,
            "started_at": now,
            "finished_at": now,
            FROM_CACHE_FIELD: "1",
            **result_fields(result),
        }
        keys = self.keys.of_job(job_id)  # every key in the job's partition: one slot
        script_keys = [keys.job(job_id), keys.metrics, keys.expiry, keys.webhooks]
        if once is not None:
            script_keys.append(keys.idempotency(once.scope))
        reply = await self._enqueue_done(
            keys=script_keys,
            args=[
                ttl,
                submitted_field(entry.operations),
                outcome_field(JobStatus.DONE.value, entry.operations),
                CACHE_HITS_FIELD,
                once.ttl if once else 0,
                job_id,
                once.request if once else "",
                keys.channel(job_id),
                JobStatus.DONE.value,
                *pairs(job_fields),
            ],
        )
        self._enqueued(reply, job_id)

    def _enqueued(self, reply: Any, job_id: str) -> str:
        """The entry id an enqueue script answered, or the exception its refusal means."""
        outcome, detail = Enqueued(int(reply[0])), reply[1]
        if outcome is Enqueued.REPLAYED:
            raise Replayed(str(detail), str(reply[2]))
        if outcome is Enqueued.BACKLOG_FULL:
            raise BacklogFull(int(detail) * self.partitions)
        if outcome is Enqueued.JOB_EXISTS:
            raise ValueError(f"job {job_id} exists already")
        return str(detail)

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

    async def find_once(self, scope: str) -> Replayed | None:
        """The job an idempotency key (its ``scope``) already names, or None."""
        keys = self.keys.partition(partition_of_scope(scope, self.partitions))
        found = await self.redis.hmget(keys.idempotency(scope), ["job", "request"])
        job_id, request = cast(list[str | None], found)
        return Replayed(job_id, request or "") if job_id else None

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

    # Consuming.

    async def read(self, consumer: str, *, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer from its streams; they stay pending until finished.

        One stream: a blocking read, as ever. Several: while there is work, each is read in
        turn, without blocking, from a stream that moves on by one every call, until
        ``count`` entries are in hand. When none has any, the read blocks on every served
        lane of one partition at once (a partition's lanes share its slot, so one
        ``XREADGROUP`` covers them: a job there wakes it at once) for ``block_ms`` divided by
        the partitions, the next partition each call; until work shows up again, each call
        first looks at every partition with one read of all its lanes. So a job queued
        anywhere waits at most about ``block_ms`` / partitions, and an idle consumer costs
        about (partitions + 1) commands per such share, however many lanes there are.
        """
        served = self.served
        if len(served) == 1:
            return await self._read([served[0].stream], consumer, count, block_ms)
        first = self._next % len(served)
        self._next += 1
        found: list[Delivery] = []
        if self._idle:
            for streams in self._by_partition:
                found += await self._read(streams, consumer, _per_stream(count, streams), None)
        else:
            for lane in (*served[first:], *served[:first]):
                found += await self._read([lane.stream], consumer, count - len(found), None)
                if len(found) >= count:
                    break
        if not found:
            share = max(10, block_ms // len(self._by_partition))
            streams = self._by_partition[first % len(self._by_partition)]
            found = await self._read(streams, consumer, _per_stream(count, streams), share)
        self._idle = not found
        return found

    async def _read(
        self, streams: Sequence[str], consumer: str, count: int, block_ms: int | None
    ) -> list[Delivery]:
        """One ``XREADGROUP`` of ``streams`` (of one slot), up to ``count`` entries each."""
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in streams:  # Redis lost its data (or a stream was deleted)
                await self._ensure_group(stream)
            return []
        return [
            self._delivery(stream, entry_id, fields)
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]

    def _partition_keys(self, delivery: Delivery) -> Keys:
        return self.keys.partition(self._by_stream[delivery.stream].part)

    async def start(
        self, delivery: ValidDelivery, lease: str, consumer: str, max_attempts: int
    ) -> int:
        """Mark the job processing under ``lease``; returns the attempt number.

        ``StartRefused.ALREADY_ENDED`` means a duplicate delivery of an ended job (just discard
        it); ``StartRefused.EXHAUSTED`` means ``max_attempts`` attempts started and none
        ended: bury it.
        """
        keys, args = self._start_call(Starting(delivery, lease, consumer, max_attempts))
        return int(await self._start(keys=keys, args=args))

    def _start_call(self, starting: Starting) -> tuple[list[str], list[Any]]:
        delivery = starting.delivery
        entry = delivery.entry
        keys = self._partition_keys(delivery)
        if_missing = {
            **queued_state(entry),
            "created_at": stream_id_timestamp(delivery.entry_id),
            "entry": delivery.entry_id,
        }
        args: list[Any] = [
            starting.lease,
            utc_now(),
            starting.consumer,
            starting.max_attempts,
            submitted_field(entry.operations),
            keys.channel(entry.job_id),
            JobStatus.PROCESSING.value,
            *FINAL_STATUSES,
            *pairs(if_missing),
        ]
        return [keys.job(entry.job_id), keys.metrics], args

    async def complete(
        self, delivery: ValidDelivery, lease: str, result: ResultInfo, *, ttl: int
    ) -> bool:
        """Record success and acknowledge; False when the lease was lost (nothing written)."""
        return await self._record(delivery, lease, _done(result), ttl)

    async def complete_then_start(
        self,
        delivery: ValidDelivery,
        lease: str,
        result: ResultInfo,
        *,
        ttl: int,
        then: Starting,
    ) -> tuple[bool, int]:
        """``complete`` one job and ``start`` the next (``then``) in one round trip: the
        replies of both, in order. The finish still runs only once its result is stored (the
        caller stored it) and fenced by its lease; the start is the one the next job gets
        anyway, only sent sooner. Both on one connection when they are in one partition (one
        slot); else, or with replication required (the finish must be followed by its own
        ``WAIT``), one after the other."""
        together = self._by_stream[delivery.stream].part == self._by_stream[then[0].stream].part
        if self.replication.replicas or not together:
            recorded = await self.complete(delivery, lease, result, ttl=ttl)
            return recorded, await self.start(*then)
        finish_keys, finish_args = self._record_call(delivery, lease, _done(result), ttl, "")
        start_keys, start_args = self._start_call(then)
        replies = await run_together(
            self.redis,
            [(self._finish, finish_keys, finish_args), (self._start, start_keys, start_args)],
        )
        return Recorded(int(replies[0])) is Recorded.RECORDED, int(replies[1])

    async def fail(
        self,
        delivery: ValidDelivery,
        lease: str,
        *,
        code: str,
        message: str,
        ttl: int,
        dead_letter: bool = False,
    ) -> bool:
        """Record failure with a reason a person can read, and acknowledge.

        With ``dead_letter`` the job is also copied to the dead-letter stream. An empty
        ``lease`` buries an entry whose last holder died, without the lease check.
        """
        outcome = {
            "status": JobStatus.FAILED.value,
            "finished_at": utc_now(),
            "error_code": code,
            "error": message,
        }
        return await self._record(
            delivery, lease, outcome, ttl, dead_letter_reason=message if dead_letter else ""
        )

    async def discard(self, delivery: Delivery) -> None:
        """Acknowledge and delete an entry that must not be processed (ended or unreadable)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(delivery.stream, self.group, delivery.entry_id)
            pipe.xdel(delivery.stream, delivery.entry_id)
            await pipe.execute()

    async def _record(
        self,
        delivery: ValidDelivery,
        lease: str,
        outcome: Mapping[str, str],
        ttl: int,
        dead_letter_reason: str = "",
    ) -> bool:
        job_id = delivery.job_id
        script_keys, args = self._record_call(delivery, lease, outcome, ttl, dead_letter_reason)
        reply, acked = await self._durably(self._finish, script_keys, args)
        recorded = Recorded(int(reply)) is Recorded.RECORDED
        if recorded and acked < self.replication.replicas:
            log.warning(
                "job %s ended, but %d of %d Redis replicas confirmed it: if its master is lost "
                "now, the job is recovered and run again",
                job_id,
                acked,
                self.replication.replicas,
                extra={"event": "redis.replication_lagging", "job": job_id},
            )
        return recorded

    def _record_call(
        self,
        delivery: ValidDelivery,
        lease: str,
        outcome: Mapping[str, str],
        ttl: int,
        dead_letter_reason: str,
    ) -> tuple[list[str], list[Any]]:
        job_id = delivery.job_id
        keys = self._partition_keys(delivery)
        status = outcome["status"]
        args: list[Any] = [
            *(lease, self.group, delivery.entry_id, ttl, dead_letter_reason, utc_now()),
            outcome_field(status, delivery.entry.operations),
            job_id,
            keys.channel(job_id),
            *FINAL_STATUSES,
            status,
            *pairs(outcome),
        ]
        script_keys = [
            keys.job(job_id),
            delivery.stream,
            keys.dead,
            keys.expiry,
            keys.metrics,
            keys.webhooks,
        ]
        return script_keys, args

    # Recovering.

    async def claim_stale(self, consumer: str, *, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer has left idle for ``min_idle_ms`` (it died), from
        each stream this process serves, up to ``count`` in all.

        Entries deleted from the stream meanwhile are dropped from the pending list: Redis 7
        does it itself and lists them apart; Redis 6.2 returns them with no fields.
        """
        claimed: list[Delivery] = []
        for lane in self.served:
            if len(claimed) >= count:
                break
            reply: Any = await self.redis.xautoclaim(
                lane.stream, self.group, consumer, min_idle_ms, "0-0", count=count - len(claimed)
            )
            for entry_id, fields in reply[1]:
                if fields is None:
                    await self.redis.xack(lane.stream, self.group, entry_id)
                else:
                    claimed.append(self._delivery(lane.stream, entry_id, fields))
        return claimed

    async def keep_alive(self, consumer: str, refs: Collection[EntryRef]) -> set[EntryRef]:
        """Reset the idle time of the entries this consumer still holds; returns those."""
        held: set[EntryRef] = set()
        for stream in {ref.stream for ref in refs}:
            entry_ids = [ref.entry_id for ref in refs if ref.stream == stream]
            kept = await self._heartbeat(keys=[stream], args=[self.group, consumer, *entry_ids])
            held.update(EntryRef(stream, entry_id) for entry_id in kept)
        return held

    async def release(self, consumer: str, refs: Collection[EntryRef], *, idle_ms: int) -> None:
        """Hand entries this consumer will not process back to the group at once.

        Streams cannot un-deliver an entry; marking it idle for ``idle_ms`` (the visibility
        timeout) lets the next recovery pass of any live worker take it straight away.
        """
        for stream in {ref.stream for ref in refs}:
            entry_ids: list[Any] = [ref.entry_id for ref in refs if ref.stream == stream]
            await self.redis.xclaim(
                stream, self.group, consumer, 0, entry_ids, idle=idle_ms, justid=True
            )

    async def remove_idle_consumers(self, *, idle_ms: int) -> list[str]:
        """Forget consumers that hold nothing and have not been seen for ``idle_ms``, in each
        stream this process serves; returns their names (once each)."""
        removed: dict[str, None] = {}
        for lane in self.served:
            consumers: Any = await self.redis.xinfo_consumers(lane.stream, self.group)
            for consumer in consumers:
                if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                    await self.redis.xgroup_delconsumer(lane.stream, self.group, consumer["name"])
                    removed[str(consumer["name"])] = None
        return list(removed)

    async def remove_consumer_if_idle(self, consumer: str) -> bool:
        """On a clean exit: leave the group of every stream where nothing is pending for us;
        True when it left them all."""
        left = True
        for lane in self.served:
            pending: Any = await self.redis.xpending_range(
                lane.stream, self.group, min="-", max="+", count=1, consumername=consumer
            )
            if pending:
                left = False
            else:
                await self.redis.xgroup_delconsumer(lane.stream, self.group, consumer)
        return left

    # Looking.

    async def backlog(self) -> int:
        """Entries not yet acknowledged (waiting or in flight), in every stream."""
        return sum([int(await self.redis.xlen(lane.stream)) for lane in self.lanes])

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


def _per_stream(count: int, streams: Sequence[str]) -> int:
    """``COUNT`` for one read of several streams (it bounds each): about ``count`` in all."""
    return max(1, count // len(streams))
