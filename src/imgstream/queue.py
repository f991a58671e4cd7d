"""Every Redis command about jobs: enqueue, read as a group member, start, finish, look up.

``JobQueue`` is assembled from its sides: the layout and look-ups (``queue_layout``), the
producer (``producer``), the consumer (this module) and the group's upkeep
(``group_upkeep``); what a consumer is handed is in ``deliveries``.

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
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from imgstream.connection import run_together
from imgstream.deliveries import Delivery, Starting, ValidDelivery
from imgstream.group_upkeep import GroupUpkeep
from imgstream.job_counters import outcome_field, submitted_field
from imgstream.jobs import (
    ResultInfo,
    pairs,
    queued_state,
    result_fields,
    stream_id_timestamp,
    utc_now,
)
from imgstream.lifecycle import FINAL_STATUSES, JobStatus, Recorded
from imgstream.producer import Producing

log = logging.getLogger(__name__)


def _done(result: ResultInfo) -> dict[str, str]:
    """The outcome fields of a job done with ``result``."""
    return {"status": JobStatus.DONE.value, "finished_at": utc_now(), **result_fields(result)}


class JobQueue(Producing, GroupUpkeep):
    """Every Redis command about jobs of one deployment (``QueueLayout`` says its shape):
    producing (``Producing``), consuming (here: read, start, finish), and the group's upkeep
    (``GroupUpkeep``)."""

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


def _per_stream(count: int, streams: Sequence[str]) -> int:
    """``COUNT`` for one read of several streams (it bounds each): about ``count`` in all."""
    return max(1, count // len(streams))
