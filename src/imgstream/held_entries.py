"""The entries a worker holds: delivered to its consumer and not yet finished.

What it promises: while a worker lives, its entries stay fresh however long their jobs run
(their idle time is reset every third of the visibility timeout), so no other worker takes
them over; an entry another worker did take over (after a stall) is dropped from the set, so
its outcome is left to the newer holder; entries handed back on a graceful stop are at once
claimable by the rest of the group.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterable

import anyio
from redis.exceptions import RedisError

from imgstream.deliveries import EntryRef
from imgstream.queue import JobQueue
from imgstream.redis_health import is_outage

log = logging.getLogger("imgstream.worker")


class HeldEntries:
    """This consumer's unfinished entries, and the task that keeps them its own."""

    def __init__(self, queue: JobQueue, consumer: str, visibility_timeout: float) -> None:
        self.queue = queue
        self.consumer = consumer
        self.visibility_ms = int(visibility_timeout * 1000)
        self.refs: set[EntryRef] = set()

    def __contains__(self, ref: object) -> bool:
        return ref in self.refs

    def add(self, refs: Iterable[EntryRef]) -> None:
        self.refs.update(refs)

    def discard(self, ref: EntryRef) -> None:
        self.refs.discard(ref)

    async def keep_fresh(self) -> None:
        """Runs until cancelled: resets the idle time of every held entry, forgets lost ones."""
        interval = max(0.1, self.visibility_ms / 3000)
        while True:
            await anyio.sleep(interval)
            if not self.refs:
                continue
            sent = set(self.refs)
            try:
                still_held = await self.queue.keep_alive(self.consumer, sent)
            except RedisError as exc:
                if not is_outage(exc):
                    raise
                continue  # the main loop waits for Redis; entries stay ours meanwhile
            self._forget(sent - still_held)

    def _forget(self, missing: set[EntryRef]) -> None:
        """Drop entries the group no longer lists as ours. Only those still in hand count:
        one finished (and acknowledged) while the heartbeat was on its way is not lost, and
        one delivered meanwhile was not asked about."""
        lost = missing & self.refs
        if lost:
            log.warning("entries %s were taken over by another worker", sorted(lost))
        self.refs -= lost

    async def hand_back(self, refs: Collection[EntryRef]) -> None:
        """Make ``refs`` claimable by the group now; if Redis is down they are recovered after
        the visibility timeout instead."""
        if not refs:
            return
        with contextlib.suppress(RedisError):
            await self.queue.release(self.consumer, refs, idle_ms=self.visibility_ms)
        self.refs.difference_update(refs)
