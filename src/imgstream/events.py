"""Live job status for any API instance: the change announcements workers make in Redis.

Every status change (``lua/start.lua``, ``lua/finish.lua``) is published on the channel named
like the job hash, so whichever API instance a client reaches can follow whichever job, with
no process memory involved. A follower subscribes *before* it reads the job's state: a change
that lands between the two then arrives as an announcement and is never missed.

Announcements carry no state of their own (at most the new status): after one, re-read the
job hash, which stays the single source of truth. Pub/sub delivers at most once, so a
follower that must never stall also re-reads now and then (the keep-alive tick does that).
"""

from __future__ import annotations

from types import TracebackType

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from imgstream.queue import Keys

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for Redis to confirm a subscription before giving up."""


class JobChanges:
    """One job's change announcements, from the confirmed subscription until closed."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def wait(self, seconds: float) -> bool:
        """True as soon as a change is announced; False after ``seconds`` without one."""
        # Never cancel a read in flight (the client would drop the connection, and with it
        # the subscription): get_message's own timeout ends each wait. It also returns None
        # for control replies and health-check pongs, hence the loop under one deadline.
        deadline = anyio.current_time() + seconds
        while (remaining := deadline - anyio.current_time()) > 0:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=remaining
            )
            if message is not None and message.get("type") == "message":
                return True
        return False

    async def aclose(self) -> None:
        """Drop the subscription (and its connection); safe while being cancelled."""
        await _close(self._pubsub)

    async def __aenter__(self) -> JobChanges:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class JobEvents:
    """Subscriptions to the status changes of one deployment's jobs."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def channel(self, job_id: str) -> str:
        """The channel a job's changes are announced on: the name of its hash."""
        return self.keys.job(job_id)

    async def subscribe(self, job_id: str) -> JobChanges:
        """Subscribe and wait until Redis confirms it: later changes are then all announced.

        The caller owns the result and must close it (``aclose`` or ``async with``). Raises
        the client's connection errors when Redis is unreachable.
        """
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel(job_id))
            await _confirmed(pubsub)
        except BaseException:
            await _close(pubsub)
            raise
        return JobChanges(pubsub)


async def _confirmed(pubsub: PubSub) -> None:
    deadline = anyio.current_time() + SUBSCRIBE_TIMEOUT
    while (remaining := deadline - anyio.current_time()) > 0:
        reply = await pubsub.get_message(timeout=remaining)
        if reply is not None and reply.get("type") == "subscribe":
            return
    raise RedisTimeoutError("Redis did not confirm the subscription in time")


async def _close(pubsub: PubSub) -> None:
    # Shielded: a stream is closed while being cancelled, and the close must still happen.
    with anyio.CancelScope(shield=True):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
