"""The consumer group's upkeep: taking over what dead workers left, keeping held entries
fresh, handing entries back, and forgetting consumers that are gone.

Together with the fencing in ``queue`` this is what makes delivery at least once: an entry
is never lost with its worker, and a live worker's entries are never taken from it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from imgstream.deliveries import Delivery, EntryRef
from imgstream.queue_layout import QueueLayout


class GroupUpkeep(QueueLayout):
    """Recovery and housekeeping of the consumer group, stream by served stream."""

    async def claim_stale(self, consumer: str, *, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer has left idle for ``min_idle_ms`` (it died), from
        each stream this process serves, up to ``count`` in all.

        Entries deleted from the stream meanwhile are dropped from the pending list: Redis 7
        does it itself and lists them apart; Redis 6.2 returns them with no fields.
        """
        claimed: list[Delivery] = []
        for lane in self.served:
            if len(claimed) >= count:
                break
            reply: Any = await self.redis.xautoclaim(
                lane.stream, self.group, consumer, min_idle_ms, "0-0", count=count - len(claimed)
            )
            for entry_id, fields in reply[1]:
                if fields is None:
                    await self.redis.xack(lane.stream, self.group, entry_id)
                else:
                    claimed.append(self._delivery(lane.stream, entry_id, fields))
        return claimed

    async def keep_alive(self, consumer: str, refs: Collection[EntryRef]) -> set[EntryRef]:
        """Reset the idle time of the entries this consumer still holds; returns those."""
        held: set[EntryRef] = set()
        for stream in {ref.stream for ref in refs}:
            entry_ids = [ref.entry_id for ref in refs if ref.stream == stream]
            kept = await self._heartbeat(keys=[stream], args=[self.group, consumer, *entry_ids])
            held.update(EntryRef(stream, entry_id) for entry_id in kept)
        return held

    async def release(self, consumer: str, refs: Collection[EntryRef], *, idle_ms: int) -> None:
        """Hand entries this consumer will not process back to the group at once.

        Streams cannot un-deliver an entry; marking it idle for ``idle_ms`` (the visibility
        timeout) lets the next recovery pass of any live worker take it straight away.
        """
        for stream in {ref.stream for ref in refs}:
            entry_ids: list[Any] = [ref.entry_id for ref in refs if ref.stream == stream]
            await self.redis.xclaim(
                stream, self.group, consumer, 0, entry_ids, idle=idle_ms, justid=True
            )

    async def remove_idle_consumers(self, *, idle_ms: int) -> list[str]:
        """Forget consumers that hold nothing and have not been seen for ``idle_ms``, in each
        stream this process serves; returns their names (once each)."""
        removed: dict[str, None] = {}
        for lane in self.served:
            consumers: Any = await self.redis.xinfo_consumers(lane.stream, self.group)
            for consumer in consumers:
                if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                    await self.redis.xgroup_delconsumer(lane.stream, self.group, consumer["name"])
                    removed[str(consumer["name"])] = None
        return list(removed)

    async def remove_consumer_if_idle(self, consumer: str) -> bool:
        """On a clean exit: leave the group of every stream where nothing is pending for us;
        True when it left them all."""
        left = True
        for lane in self.served:
            pending: Any = await self.redis.xpending_range(
                lane.stream, self.group, min="-", max="+", count=1, consumername=consumer
            )
            if pending:
                left = False
            else:
                await self.redis.xgroup_delconsumer(lane.stream, self.group, consumer)
        return left
