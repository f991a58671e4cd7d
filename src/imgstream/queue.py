"""Every Redis command about jobs: enqueue, read as a group member, start, finish, look up.

Delivery is at least once: an entry stays pending in the consumer group until the worker
that holds the job's lease has stored the result and recorded the outcome, and the outcome
and the acknowledgement happen in one script. Acknowledged entries are deleted, so the
stream holds outstanding work only and its length is the backlog.

All keys of one deployment share the hash tag ``{<prefix>}`` (``keys``), so every script
touches a single Redis Cluster slot. Key names and fields are documented in
``docs/wire-format.md``. The job counters change in the same scripts as the job's status, so
a job counts once as submitted and once under its one final outcome.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from imgstream.connection import load_script
from imgstream.jobs import (
    FINAL_STATUSES,
    Enqueued,
    JobRecord,
    JobStatus,
    OriginalInfo,
    Recorded,
    ResultInfo,
    StreamEntry,
    WireError,
    pairs,
    queued_job_fields,
    queued_state,
    result_fields,
    stream_id_timestamp,
    utc_now,
)
from imgstream.keys import Keys as Keys  # re-exported: most modules take it from here
from imgstream.metrics import CACHE_HITS_FIELD, outcome_field, submitted_field


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
class Delivery:
    """An entry handed to this consumer. ``entry`` is None when the fields are malformed."""

    entry_id: str
    fields: Mapping[str, str]
    entry: StreamEntry | None
    problem: str = ""

    @property
    def job_id(self) -> str | None:
        return self.entry.job_id if self.entry else None


class JobQueue:
    """The jobs stream, its consumer group and the job hashes of one deployment."""

    def __init__(self, redis: Redis, keys: Keys, group: str) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self._enqueue = load_script(redis, "enqueue")
        self._enqueue_done = load_script(redis, "enqueue_done")
        self._start = load_script(redis, "start")
        self._finish = load_script(redis, "finish")
        self._heartbeat = load_script(redis, "heartbeat")

    async def ensure_group(self) -> None:
        """Create the stream and its group if missing; harmless when they exist."""
        try:
            await self.redis.xgroup_create(self.keys.stream, self.group, id="0", mkstream=True)
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
        idempotency record is written in the same step, and ``Replayed`` is raised instead
        when the record names a job already (then nothing was created).
        """
        stream_fields = replace(entry, job_id=job_id)
        job_fields = {
            **queued_job_fields(entry, created_at=utc_now(), filename=filename, owner=owner),
            **(original.to_fields() if original is not None else {}),
            **({"callback_url": callback_url} if callback_url else {}),
        }
        keys = [self.keys.stream, self.keys.job(job_id), self.keys.metrics]
        if once is not None:
            keys.append(self.keys.idempotency(once.scope))
        reply = await self._enqueue(
            keys=keys,
            args=[
                max_backlog,
                submitted_field(entry.operations),
                once.ttl if once else 0,
                job_id,
                once.request if once else "",
                len(stream_fields.to_fields()),
                *pairs(stream_fields.to_fields()),
                *pairs(job_fields),
            ],
        )
        return _enqueued(reply)

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
            **result_fields(result),
        }
        keys = [self.keys.job(job_id), self.keys.metrics, self.keys.expiry, self.keys.webhooks]
        if once is not None:
            keys.append(self.keys.idempotency(once.scope))
        reply = await self._enqueue_done(
            keys=keys,
            args=[
                ttl,
                submitted_field(entry.operations),
                outcome_field(JobStatus.DONE.value, entry.operations),
                CACHE_HITS_FIELD,
                once.ttl if once else 0,
                job_id,
                once.request if once else "",
                self.keys.channel(job_id),
                JobStatus.DONE.value,
                *pairs(job_fields),
            ],
        )
        _enqueued(reply)

    async def find_once(self, scope: str) -> Replayed | None:
        """The job an idempotency key (its ``scope``) already names, or None."""
        found = await self.redis.hmget(self.keys.idempotency(scope), ["job", "request"])
        job_id, request = cast(list[str | None], found)
        return Replayed(job_id, request or "") if job_id else None

    async def time_left(self, job_id: str, default: int) -> int:
        """Seconds until the job's hash expires; ``default`` while it has no expiry."""
        seconds = int(await self.redis.ttl(self.keys.job(job_id)))
        return default if seconds == -1 else max(0, seconds)

    async def get_job(self, job_id: str) -> JobRecord | None:
        fields = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return JobRecord.from_hash(job_id, fields) if fields else None

    # Consuming.

    async def read(self, consumer: str, *, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer; they stay pending until finished."""
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis lost its data (or someone deleted the stream)
            return []
        if not reply:
            return []
        _stream, entries = reply[0]
        return [_delivery(entry_id, fields) for entry_id, fields in entries]

    async def start(self, delivery: Delivery, lease: str, consumer: str, max_attempts: int) -> int:
        """Mark the job processing under ``lease``; returns the attempt number.

        ``StartRefused.ALREADY_ENDED`` means a duplicate delivery of an ended job (just discard
        it); ``StartRefused.EXHAUSTED`` means ``max_attempts`` attempts started and none
        ended: bury it.
        """
        assert delivery.entry is not None
        entry = delivery.entry
        if_missing = {
            **queued_state(entry),
            "created_at": stream_id_timestamp(delivery.entry_id),
            "entry": delivery.entry_id,
        }
        reply = await self._start(
            keys=[self.keys.job(entry.job_id), self.keys.metrics],
            args=[
                lease,
                utc_now(),
                consumer,
                max_attempts,
                submitted_field(entry.operations),
                self.keys.channel(entry.job_id),
                JobStatus.PROCESSING.value,
                *FINAL_STATUSES,
                *pairs(if_missing),
            ],
        )
        return int(reply)

    async def complete(
        self, delivery: Delivery, lease: str, result: ResultInfo, *, ttl: int
    ) -> bool:
        """Record success and acknowledge; False when the lease was lost (nothing written)."""
        outcome = {
            "status": JobStatus.DONE.value,
            "finished_at": utc_now(),
            **result_fields(result),
        }
        return await self._record(delivery, lease, outcome, ttl)

    async def fail(
        self,
        delivery: Delivery,
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

    async def discard(self, entry_id: str) -> None:
        """Acknowledge and delete an entry that must not be processed (ended or unreadable)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, self.group, entry_id)
            pipe.xdel(self.keys.stream, entry_id)
            await pipe.execute()

    async def _record(
        self,
        delivery: Delivery,
        lease: str,
        outcome: Mapping[str, str],
        ttl: int,
        dead_letter_reason: str = "",
    ) -> bool:
        assert delivery.entry is not None
        job_id = delivery.entry.job_id
        status = outcome["status"]
        args: list[Any] = [
            *(lease, self.group, delivery.entry_id, ttl, dead_letter_reason, utc_now()),
            outcome_field(status, delivery.entry.operations),
            job_id,
            self.keys.channel(job_id),
            *FINAL_STATUSES,
            status,
            *pairs(outcome),
        ]
        keys = [
            self.keys.job(delivery.entry.job_id),
            self.keys.stream,
            self.keys.dead,
            self.keys.expiry,
            self.keys.metrics,
            self.keys.webhooks,
        ]
        reply = await self._finish(keys=keys, args=args)
        return Recorded(int(reply)) is Recorded.RECORDED

    # Recovering.

    async def claim_stale(self, consumer: str, *, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer has left idle for ``min_idle_ms`` (it died).

        Entries deleted from the stream meanwhile are dropped from the pending list: Redis 7
        does it itself and lists them apart; Redis 6.2 returns them with no fields.
        """
        reply: Any = await self.redis.xautoclaim(
            self.keys.stream, self.group, consumer, min_idle_ms, "0-0", count=count
        )
        claimed = []
        for entry_id, fields in reply[1]:
            if fields is None:
                await self.redis.xack(self.keys.stream, self.group, entry_id)
            else:
                claimed.append(_delivery(entry_id, fields))
        return claimed

    async def keep_alive(self, consumer: str, entry_ids: Collection[str]) -> set[str]:
        """Reset the idle time of the entries this consumer still holds; returns those."""
        if not entry_ids:
            return set()
        held = await self._heartbeat(
            keys=[self.keys.stream], args=[self.group, consumer, *entry_ids]
        )
        return set(held)

    async def release(self, consumer: str, entry_ids: Collection[str], *, idle_ms: int) -> None:
        """Hand entries this consumer will not process back to the group at once.

        Streams cannot un-deliver an entry; marking it idle for ``idle_ms`` (the visibility
        timeout) lets the next recovery pass of any live worker take it straight away.
        """
        if entry_ids:
            await self.redis.xclaim(
                self.keys.stream,
                self.group,
                consumer,
                0,
                list(entry_ids),
                idle=idle_ms,
                justid=True,
            )

    async def remove_idle_consumers(self, *, idle_ms: int) -> list[str]:
        """Forget consumers that hold nothing and have not been seen for ``idle_ms``."""
        removed = []
        consumers: Any = await self.redis.xinfo_consumers(self.keys.stream, self.group)
        for consumer in consumers:
            if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                await self.redis.xgroup_delconsumer(self.keys.stream, self.group, consumer["name"])
                removed.append(str(consumer["name"]))
        return removed

    async def remove_consumer_if_idle(self, consumer: str) -> bool:
        """On a clean exit: leave the group unless entries are still pending for us."""
        pending: Any = await self.redis.xpending_range(
            self.keys.stream, self.group, min="-", max="+", count=1, consumername=consumer
        )
        if pending:
            return False
        await self.redis.xgroup_delconsumer(self.keys.stream, self.group, consumer)
        return True

    # Looking.

    async def backlog(self) -> int:
        """Entries not yet acknowledged (waiting or in flight)."""
        return int(await self.redis.xlen(self.keys.stream))


def _enqueued(reply: Any) -> str:
    """The entry id an enqueue script answered, or the exception its refusal means."""
    outcome, detail = Enqueued(int(reply[0])), reply[1]
    if outcome is Enqueued.REPLAYED:
        raise Replayed(str(detail), str(reply[2]))
    if outcome is Enqueued.BACKLOG_FULL:
        raise BacklogFull(int(detail))
    if outcome is Enqueued.JOB_EXISTS:
        raise ValueError("the job exists already")
    return str(detail)


def _delivery(entry_id: str, fields: Mapping[str, str] | None) -> Delivery:
    fields = fields or {}
    try:
        return Delivery(entry_id=entry_id, fields=fields, entry=StreamEntry.from_fields(fields))
    except WireError as exc:
        return Delivery(entry_id=entry_id, fields=fields, entry=None, problem=str(exc))
