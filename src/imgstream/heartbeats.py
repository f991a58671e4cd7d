"""Which workers are alive: each worker process refreshes its entry in ``{prefix}:workers``
every few seconds; the stats, the metrics and ``/readyz`` read it.

The consumer group alone cannot say this: Redis 7.0 does not list a consumer, nor refresh
its idle time, until it is served an entry, so an idle fleet would look dead. The heartbeat
is scored with Redis's clock, never the worker's, so several machines are judged alike.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from imgstream.config import Settings
from imgstream.connection import connect, load_script, server_ms
from imgstream.keys import Keys
from imgstream.runtime import find_redis


def consumer_name() -> str:
    """A worker's name, unique per process and recognisable: ``host-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def consumer_origin(name: str) -> tuple[str, int] | None:
    """The host and pid a ``consumer_name`` was made on; None for a name of another shape."""
    pieces = name.rsplit("-", 2)
    if len(pieces) != 3 or not pieces[0] or not pieces[1].isdigit():
        return None
    return pieces[0], int(pieces[1])


class Presence:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._beat = load_script(redis, "presence")

    async def beat(self, consumer: str, *, forget_after: float) -> int:
        """Note ``consumer`` alive now; returns the server time in ms."""
        reply = await self._beat(
            keys=[self.keys.workers], args=[consumer, int(forget_after * 1000)]
        )
        return int(reply)

    async def leave(self, consumer: str) -> None:
        await self.redis.zrem(self.keys.workers, consumer)

    async def seen_within(self, seconds: float) -> bool:
        """Has any worker's heartbeat arrived in the last ``seconds``?"""
        return bool(await self.beating(seconds))

    async def beating(self, seconds: float) -> list[str]:
        """The workers whose heartbeat arrived in the last ``seconds`` (Redis's clock)."""
        now_ms = server_ms(await self.redis.time())
        names = await self.redis.zrangebyscore(self.keys.workers, now_ms - seconds * 1000, "+inf")
        return [str(name) for name in names]


async def worker_alive_here(settings: Settings, seconds: float) -> bool:
    """``imgstream health``: did a worker process on this host beat in the last ``seconds``?

    In a container, "this host" is the container: the check of a worker service.
    """
    redis = connect(find_redis(settings)[0], cluster=settings.redis_cluster)
    try:
        names = await Presence(redis, Keys(settings.key_prefix)).beating(seconds)
    except RedisError:
        return False
    finally:
        await redis.aclose()
    host = socket.gethostname()
    return any((origin := consumer_origin(name)) and origin[0] == host for name in names)


def heartbeat_interval(settings: Settings) -> float:
    """Often enough that a live worker is never taken for dead (``live_within``)."""
    return min(5.0, settings.visibility_timeout / 3)


async def run_heartbeat(
    settings: Settings, presence: Presence, consumer: str, reading: anyio.Event
) -> None:
    """A worker's background task: once it is ``reading`` (it has joined the consumer group),
    beat every few seconds; on the way out, leave. The first beat means "reading"."""
    await reading.wait()
    try:
        while True:
            with contextlib.suppress(RedisError):
                await presence.beat(consumer, forget_after=settings.consumer_idle_ttl)
            await anyio.sleep(heartbeat_interval(settings))
    finally:
        with anyio.move_on_after(1, shield=True), contextlib.suppress(RedisError):
            await presence.leave(consumer)
