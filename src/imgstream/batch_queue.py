"""Every Redis command about batches: their records and their idempotency keys.

A batch's jobs may live in different partitions (cluster slots), so nothing here runs in a
script with a job: a batch's hash is written before its first job is queued and only read
after, and its idempotency key is claimed (``SET NX``) before anything is written, so two
concurrent retries with one key make one batch.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from imgstream.batches import BatchRecord
from imgstream.jobs import WireError, pairs
from imgstream.keys import Keys


class BatchStore:
    """The batch hashes and batch idempotency records of one deployment."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def create(self, record: BatchRecord, ttl: int) -> None:
        """Write ``record``, kept ``ttl`` seconds unless ``keep_until`` moves that."""
        key = self.keys.batch(record.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, items=pairs(record.to_fields()))
            pipe.expire(key, ttl)
            await pipe.execute()

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
