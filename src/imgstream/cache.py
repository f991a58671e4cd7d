"""The result cache and the files jobs share, in Redis: which jobs use a shared file, and
which result a content key names.

Shared files are originals stored once per SHA-256 and results stored once per content key
(``content``). A shared file lives as long as the newest job that uses it: each job that
uses one is recorded in the file's set of users (``pin``, before the file is written or
handed out), and the janitor deletes the file only when every user's job hash is gone
(``retire``, which marks it so no pin can slip in while it is deleted).

These keys are all under the deployment's base tag, so each script here touches one slot,
and no script mixes them with a job's keys (which live in the job's partition): the lookup
and the job's creation are separate steps. What a race between them costs, at worst: a pin
for a job that is never made (its process died) keeps a file up to ``IMGSTREAM_ORPHAN_AGE``
longer; two identical jobs at once both miss and both render (the same bytes, one file); a
worker that dies between recording its job and its cache entry leaves the next identical
job to render again. A job is never handed a result that is being deleted.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from imgstream.connection import load_script
from imgstream.jobs import ResultInfo, pairs, result_fields, result_of
from imgstream.keys import Keys
from imgstream.lifecycle import Pinned

log = logging.getLogger("imgstream.cache")

RETIRE_LEASE_MS = 10 * 60 * 1000
"""How long the janitor's retiring mark refuses pins if the janitor dies before deleting."""


class SharedFiles:
    """The users of shared files and the result cache entries of one deployment."""

    def __init__(self, redis: Redis, keys: Keys, *, first_look: float) -> None:
        self.redis = redis
        self.keys = keys
        self.first_look = first_look
        """Seconds after a first pin before the janitor looks at a file (the orphan age)."""
        self._pin = load_script(redis, "pin")
        self._retire = load_script(redis, "retire")

    async def pin(self, name: str, job_id: str) -> bool:
        """Record ``job_id`` as a user of the shared file ``name``; False when the janitor is
        deleting it (store the job's file under its own id then)."""
        reply = await self._pin(keys=self._keys_of(name), args=[job_id, name, self.first_look])
        return Pinned(int(reply[0])) is Pinned.PINNED

    async def claim(self, content_key: str, job_id: str) -> ResultInfo | None:
        """The cached result of ``content_key``, with ``job_id`` recorded as its user; None
        on a miss."""
        keys = [*self._keys_of(content_key), self.keys.cached(content_key)]
        reply: Any = await self._pin(keys=keys, args=[job_id, content_key, self.first_look])
        if Pinned(int(reply[0])) is not Pinned.PINNED:
            return None
        fields = dict(zip(reply[1::2], reply[2::2], strict=True))
        return result_of(fields)

    async def record(self, result: ResultInfo) -> None:
        """Make ``result`` (stored under its content key) the cache entry of its key. Best
        effort: a Redis failure only costs a future miss, and is logged."""
        try:
            await self.redis.hset(
                self.keys.cached(result.content_key), items=pairs(result_fields(result))
            )
        except RedisError as exc:
            log.warning("result of %s not cached (%s)", result.content_key, exc)

    async def due(self, now: int, count: int) -> list[str]:
        """Shared files the janitor should look at by ``now`` (Unix s)."""
        found = await self.redis.zrangebyscore(self.keys.shared, "-inf", now, start=0, num=count)
        return cast(list[str], found)

    async def users(self, name: str) -> list[tuple[str, float]]:
        """Each user of ``name``: its job id and when (Unix s) it began to use the file."""
        found = await self.redis.zrange(self.keys.references(name), 0, -1, withscores=True)
        return cast(list[tuple[str, float]], found)

    async def look_again(self, name: str, when: float) -> None:
        await self.redis.zadd(self.keys.shared, {name: when})

    async def retire(self, name: str, gone: list[str]) -> bool:
        """Forget the users in ``gone``; True when none is left and the file is now to be
        deleted (then ``retired``)."""
        keys = [*self._keys_of(name), self.keys.cached(name)]
        reply = await self._retire(keys=keys, args=[name, RETIRE_LEASE_MS, *gone])
        return bool(reply)

    async def retired(self, name: str) -> None:
        """The file of ``name`` is deleted: it may be shared again."""
        await self.redis.delete(self.keys.retiring(name))

    def _keys_of(self, name: str) -> list[str]:
        return [self.keys.references(name), self.keys.shared, self.keys.retiring(name)]
