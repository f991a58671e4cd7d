"""The producing side of the queue: a job's hash and stream entry added in one script.

Promises: a job is queued whole or not at all (hash, entry and counters in one script, in
the job's partition); an idempotency key names at most one job, written in the same step;
the backlog bound is checked in that step too, so concurrent producers cannot overshoot it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, cast

from imgstream.job_counters import CACHE_HITS_FIELD, outcome_field, submitted_field
from imgstream.jobs import (
    FROM_CACHE_FIELD,
    OriginalInfo,
    ResultInfo,
    StreamEntry,
    pairs,
    queued_job_fields,
    result_fields,
    utc_now,
)
from imgstream.keys import partition_of_scope
from imgstream.lifecycle import Enqueued, JobStatus
from imgstream.queue_layout import QueueLayout


class ReplicationLagging(Exception):
    """The job was queued on its master, but fewer replicas than required acknowledged it in
    time: it runs unless that master is lost before its replicas catch up."""

    def __init__(self, job_id: str, acked: int, wanted: int) -> None:
        super().__init__(
            f"job {job_id} was queued, but {acked} of {wanted} Redis replicas confirmed it"
        )
        self.job_id = job_id


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


class Producing(QueueLayout):
    """Adding jobs: ``enqueue`` for work, ``enqueue_done`` for a job answered from the cache."""

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

    async def find_once(self, scope: str) -> Replayed | None:
        """The job an idempotency key (its ``scope``) already names, or None."""
        keys = self.keys.partition(partition_of_scope(scope, self.partitions))
        found = await self.redis.hmget(keys.idempotency(scope), ["job", "request"])
        job_id, request = cast(list[str | None], found)
        return Replayed(job_id, request or "") if job_id else None
