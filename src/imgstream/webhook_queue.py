"""Every Redis command about webhooks: the schedule of calls due, and the list of calls
that could not be delivered (shown on the dashboard).

``finish.lua`` adds an ended job with a callback URL to the schedule in the same step as its
outcome, so a webhook is sent at least once; a sender takes due calls under a lease
(``webhook_claim.lua``), and a call leaves the schedule only once delivered or given up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import cast

from redis.asyncio import Redis

from imgstream.connection import load_script, server_ms
from imgstream.keys import Keys

UNDELIVERABLE_KEPT = 100
"""How many undeliverable webhooks the list keeps (newest first)."""


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """A webhook given up on: which job, where, how many tries, the last problem, when."""

    job: str
    url: str
    attempts: int
    error: str
    at: str


class WebhookQueue:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._claim = load_script(redis, "webhook_claim")

    async def claim(self, count: int, lease_ms: int) -> list[str]:
        """Up to ``count`` job ids whose webhook is due, held for ``lease_ms``."""
        taken = await self._claim(keys=[self.keys.webhooks], args=[count, lease_ms])
        return [str(job_id) for job_id in taken]

    async def attempted(self, job_id: str) -> int:
        """Count one more try of the job's webhook; returns the tries so far."""
        return int(await self.redis.hincrby(self.keys.webhook_attempts, job_id, 1))

    async def delivered(self, job_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.webhooks, job_id)
            pipe.hdel(self.keys.webhook_attempts, job_id)
            await pipe.execute()

    async def retry_in(self, job_id: str, seconds: float) -> None:
        now = server_ms(await self.redis.time())
        await self.redis.zadd(self.keys.webhooks, {job_id: now + int(seconds * 1000)}, xx=True)

    async def give_up(self, failure: Undeliverable) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.webhooks, failure.job)
            pipe.hdel(self.keys.webhook_attempts, failure.job)
            pipe.lpush(self.keys.webhook_failures, json.dumps(asdict(failure)))
            pipe.ltrim(self.keys.webhook_failures, 0, UNDELIVERABLE_KEPT - 1)
            await pipe.execute()

    async def undeliverable(self, count: int = UNDELIVERABLE_KEPT) -> list[Undeliverable]:
        """The latest webhooks given up on, newest first."""
        items = cast(list[str], await self.redis.lrange(self.keys.webhook_failures, 0, count - 1))
        return [Undeliverable(**json.loads(item)) for item in items]

    async def pending(self) -> int:
        """Webhooks waiting for a (first or next) try."""
        return int(await self.redis.zcard(self.keys.webhooks))
