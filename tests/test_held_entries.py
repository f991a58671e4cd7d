"""A worker's held entries against a real Redis: what its heartbeat keeps, drops and says."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from imgstream.deliveries import EntryRef
from imgstream.held_entries import HeldEntries
from imgstream.jobs import StreamEntry, new_job_id
from imgstream.queue import JobQueue

pytestmark = pytest.mark.anyio


class HeldUp(JobQueue):
    """The real queue, whose first ``keep_alive`` answer is held back until the test lets it
    go: so the test can finish and deliver entries while a heartbeat is on its way. The
    next heartbeat says the first answer has been dealt with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked, self.answer, self.again = anyio.Event(), anyio.Event(), anyio.Event()

    async def keep_alive(self, consumer: str, refs: Collection[EntryRef]) -> set[EntryRef]:
        held = await super().keep_alive(consumer, refs)
        if not self.asked.is_set():
            self.asked.set()
            await self.answer.wait()
        else:
            self.again.set()
        return held


async def test_entries_that_change_hands_during_a_heartbeat_are_judged_on_its_answer(
    queue: JobQueue, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry finished while the heartbeat was on its way is not "taken over", one
    delivered meanwhile is kept, and one another worker really took is dropped."""
    slow = HeldUp(redis, queue.keys, queue.group)
    await slow.ensure_group()
    for _ in range(4):
        job_id = new_job_id()
        await slow.enqueue(job_id, StreamEntry(job_id, '[{"op":"grayscale"}]'))
    finished, stolen, kept = [d.ref for d in await slow.read("me", count=3, block_ms=100)]
    await redis.xclaim(slow.keys.stream, slow.group, "thief", 0, [stolen.entry_id], justid=True)
    held = HeldEntries(slow, "me", visibility_timeout=0.3)
    held.add([finished, stolen, kept])
    caplog.set_level(logging.WARNING, logger="imgstream.worker")
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(held.keep_fresh)
        await slow.asked.wait()
        await redis.xack(slow.keys.stream, slow.group, finished.entry_id)  # its job ended
        held.discard(finished)
        (late,) = [d.ref for d in await slow.read("me", count=1, block_ms=100)]
        held.add([late])
        slow.answer.set()
        with anyio.fail_after(30):
            await slow.again.wait()
        tasks.cancel_scope.cancel()
    assert held.refs == {kept, late}
    warnings = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert warnings == [f"entries {[stolen]} were taken over by another worker"]
