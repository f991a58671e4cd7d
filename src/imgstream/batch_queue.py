"""Every Redis command about batches: their records and their idempotency keys.

A batch's jobs may live in different partitions (cluster slots), so nothing here runs in a
script with a job: a batch's hash is written before its first job is queued and only read
after, and its idempotency key is claimed (``SET NX``) before anything is written, so two
concurrent retries with one key make one batch.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import cast

from redis.asyncio import Redis

from imgstream.batches import BatchRecord, last_finished, seconds_to_keep
from imgstream.jobs import JobRecord, WireError, pairs
from imgstream.keys import Keys


class BatchStore:
    """The batch hashes and batch idempotency records of one deployment."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def create(self, record: BatchRecord, ttl: int) -> None:
        """Write ``record``, kept ``ttl`` seconds unless ``keep_for`` moves that, and name it
        open, for ``BatchKeeper`` to keep alive as long as its jobs."""
        key = self.keys.batch(record.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, items=pairs(record.to_fields()))
            pipe.expire(key, ttl)
            await pipe.execute()
        await self.redis.sadd(self.keys.open_batches, record.id)

    async def get(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None when it is unknown, expired or unreadable."""
        fields = cast(dict[str, str], await self.redis.hgetall(self.keys.batch(batch_id)))
        if not fields:
            return None
        try:
            return BatchRecord.from_hash(batch_id, fields)
        except WireError:
            return None

    async def keep_for(self, batch_id: str, seconds: int) -> None:
        await self.redis.expire(self.keys.batch(batch_id), max(1, seconds))

    async def delete(self, batch_id: str) -> None:
        await self.redis.delete(self.keys.batch(batch_id))

    async def close(self, batch_id: str) -> None:
        """Stop keeping the batch alive: its expiry is its last job's, or it is gone."""
        await self.redis.srem(self.keys.open_batches, batch_id)

    async def claim_once(
        self, scope: str, batch_id: str, request: str, ttl: int
    ) -> tuple[str, str] | None:
        """Name ``batch_id`` as the batch of an ``Idempotency-Key`` (``scope``), unless the key
        names one already: then that (batch id, request fingerprint)."""
        key = self.keys.batch_idempotency(scope)
        if await self.redis.set(key, f"{batch_id} {request}", nx=True, ex=ttl):
            return None
        return await self.find_once(scope) or ("", "")

    async def find_once(self, scope: str) -> tuple[str, str] | None:
        """The (batch id, request fingerprint) an ``Idempotency-Key`` names, or None."""
        value = cast(str | None, await self.redis.get(self.keys.batch_idempotency(scope)))
        if not value:
            return None
        batch_id, _, request = value.partition(" ")
        return batch_id, request

    async def release_once(self, scope: str) -> None:
        """Forget a claim whose batch was not made, so that a retry can make it."""
        await self.redis.delete(self.keys.batch_idempotency(scope))


JobsReader = Callable[[Collection[str]], Awaitable[list[JobRecord | None]]]
"""Reads jobs by id, in one round trip (``JobQueue.get_jobs``)."""


class BatchKeeper:
    """Keeps every batch alive as long as its jobs: the janitor's step for batches.

    A batch's hash is written with the result TTL before its jobs are queued, and a job may
    wait longer than that in a backlog, while nobody reads the batch (whose reads move its
    expiry too). Each sweep pushes an open batch's expiry out again by the result TTL; once
    its last job has ended, the batch gets that job's expiry and is no longer looked at.
    With the janitor off (``IMGSTREAM_JANITOR_INTERVAL=0``) a batch keeps its first TTL.
    """

    def __init__(self, store: BatchStore, jobs: JobsReader, result_ttl: int) -> None:
        self.store = store
        self.jobs = jobs
        self.result_ttl = result_ttl

    async def sweep(self) -> int:
        """Look at every open batch once; how many are still open."""
        still_open = 0
        async for batch_id in self.store.redis.sscan_iter(self.store.keys.open_batches):
            if await self._keep(batch_id):
                still_open += 1
        return still_open

    async def _keep(self, batch_id: str) -> bool:
        record = await self.store.get(batch_id)
        jobs = await self.jobs(record.job_ids) if record is not None else []
        if all(job is None for job in jobs):
            await self.store.delete(batch_id)
            await self.store.close(batch_id)
            return False
        await self.store.keep_for(batch_id, seconds_to_keep(jobs, self.result_ttl, time.time()))
        if last_finished(jobs) is None:
            return True
        await self.store.close(batch_id)
        return False
