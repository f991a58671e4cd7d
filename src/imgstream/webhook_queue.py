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
    """The webhook schedules of a deployment's ``partitions`` (each under its partition's tag,
    where ``finish.lua`` writes it with the job's outcome) and its one undeliverable list."""

    def __init__(self, redis: Redis, keys: Keys, partitions: int = 1) -> None:
        self.redis = redis
        self.keys = keys
        self.partitions = partitions
        self._claim = load_script(redis, "webhook_claim")

    async def claim(self, count: int, lease_ms: int) -> list[str]:
        """Up to ``count`` job ids whose webhook is due, held for ``lease_ms``, from each
        partition's schedule in turn."""
        taken: list[str] = []
        for part in range(self.partitions):
            if len(taken) >= count:
                break
            schedule = self.keys.partition(part).webhooks
            due = await self._claim(keys=[schedule], args=[count - len(taken), lease_ms])
            taken += [str(job_id) for job_id in due]
        return taken

    async def attempted(self, job_id: str) -> int:
        """Count one more try of the job's webhook; returns the tries so far."""
        keys = self.keys.of_job(job_id)
        return int(await self.redis.hincrby(keys.webhook_attempts, job_id, 1))

    async def delivered(self, job_id: str) -> None:
        await self._unschedule(job_id)

    async def _unschedule(self, job_id: str) -> None:
        keys = self.keys.of_job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.webhooks, job_id)
            pipe.hdel(keys.webhook_attempts, job_id)
            await pipe.execute()

    async def retry_in(self, job_id: str, seconds: float) -> None:
        now = server_ms(await self.redis.time())
        schedule = self.keys.of_job(job_id).webhooks
        await self.redis.zadd(schedule, {job_id: now + int(seconds * 1000)}, xx=True)

    async def give_up(self, failure: Undeliverable) -> None:
        """Note the failure, then unschedule the call: two steps, as the list and a schedule
        may live in different slots (a sender dying in between notes it twice at worst)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.webhook_failures, json.dumps(asdict(failure)))
            pipe.ltrim(self.keys.webhook_failures, 0, UNDELIVERABLE_KEPT - 1)
            await pipe.execute()
        await self._unschedule(failure.job)

    async def undeliverable(self, count: int = UNDELIVERABLE_KEPT) -> list[Undeliverable]:
        """The latest webhooks given up on, newest first."""
        items = cast(list[str], await self.redis.lrange(self.keys.webhook_failures, 0, count - 1))
        return [Undeliverable(**json.loads(item)) for item in items]

    async def pending(self) -> int:
        """Webhooks waiting for a (first or next) try, in every partition."""
        schedules = [self.keys.partition(part).webhooks for part in range(self.partitions)]
        return sum([int(await self.redis.zcard(schedule)) for schedule in schedules])
