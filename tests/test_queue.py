"""The queue against a real (private) Redis: group, enqueue, deliveries, fencing, TTLs."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from imgstream.jobs import ResultInfo, StreamEntry, new_job_id
from imgstream.lifecycle import JobStatus, StartRefused
from imgstream.producer import BacklogFull
from imgstream.queue import JobQueue

pytestmark = pytest.mark.anyio

OPS = '[{"op":"grayscale"}]'


def entry_for(job_id: str) -> StreamEntry:
    return StreamEntry(job_id=job_id, operations=OPS, format="png")


async def test_group_creation_is_idempotent(queue: JobQueue, redis: Redis) -> None:
    await queue.ensure_group()
    await queue.ensure_group()
    groups = await redis.xinfo_groups(queue.keys.stream)
    assert [group["name"] for group in groups] == [queue.group]


async def test_every_key_shares_one_cluster_hash_tag(queue: JobQueue) -> None:
    tag = f"{{{queue.keys.prefix}}}"
    for key in (queue.keys.stream, queue.keys.dead, queue.keys.job(new_job_id())):
        assert key.startswith(tag)


async def test_enqueue_writes_hash_and_entry_together(queue: JobQueue, redis: Redis) -> None:
    job_id = new_job_id()
    entry_id = await queue.enqueue(job_id, entry_for(job_id), filename="cat.png")
    record = await queue.get_job(job_id)
    assert record is not None
    assert record.status is JobStatus.QUEUED and record.filename == "cat.png"
    assert record.created_at is not None
    entries = await redis.xrange(queue.keys.stream)
    assert entries == [(entry_id, {"job": job_id, "operations": OPS, "format": "png"})]
    assert await redis.ttl(queue.keys.job(job_id)) == -1  # no expiry while outstanding
    with pytest.raises(ValueError, match="exists"):
        await queue.enqueue(job_id, entry_for(job_id))


async def test_finished_entry_is_acknowledged_and_removed(queue: JobQueue, redis: Redis) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("c1", count=10, block_ms=100)
    assert delivery.job_id == job_id
    assert await queue.start(delivery, "lease-1", "c1", 3) == 1
    processing = await queue.get_job(job_id)
    assert processing is not None and processing.status is JobStatus.PROCESSING
    assert processing.started_at is not None
    assert (await redis.xpending(queue.keys.stream, queue.group))["pending"] == 1

    recorded = await queue.complete(delivery, "lease-1", ResultInfo(4, 3, "png", 120), ttl=600)
    assert recorded
    done = await queue.get_job(job_id)
    assert done is not None and done.status is JobStatus.DONE
    assert done.result == ResultInfo(4, 3, "png", 120)
    assert done.finished_at is not None and done.attempts == 1
    assert (await redis.xpending(queue.keys.stream, queue.group))["pending"] == 0
    assert await redis.xlen(queue.keys.stream) == 0
    assert 0 < await redis.ttl(queue.keys.job(job_id)) <= 600


async def test_a_stale_lease_cannot_overwrite_the_newer_outcome(queue: JobQueue) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("old", count=1, block_ms=100)
    assert await queue.start(delivery, "old-lease", "old", 3) == 1
    assert await queue.start(delivery, "new-lease", "new", 3) == 2  # taken over by another worker

    assert not await queue.fail(delivery, "old-lease", code="x", message="late", ttl=60)
    assert await queue.complete(delivery, "new-lease", ResultInfo(1, 1, "png", 1), ttl=60)
    assert not await queue.complete(delivery, "new-lease", ResultInfo(2, 2, "png", 2), ttl=60)
    record = await queue.get_job(job_id)
    assert record is not None
    assert record.status is JobStatus.DONE and record.result == ResultInfo(1, 1, "png", 1)
    assert record.error is None and record.attempts == 2


async def test_redelivery_of_an_ended_job_is_recognised(queue: JobQueue) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("c", count=1, block_ms=100)
    await queue.start(delivery, "l", "c", 3)
    await queue.fail(delivery, "l", code="decode_error", message="broken", ttl=60)
    assert await queue.start(delivery, "l2", "c", 3) == -1
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED


async def test_a_bare_xadd_becomes_a_visible_job_when_started(
    queue: JobQueue, redis: Redis
) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await redis.xadd(queue.keys.stream, {"job": job_id, "operations": OPS})
    assert await queue.get_job(job_id) is None
    [delivery] = await queue.read("c", count=1, block_ms=100)
    assert await queue.start(delivery, "l", "c", 3) == 1
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.PROCESSING
    assert record.created_at is not None and record.operations == OPS


async def test_malformed_entries_are_delivered_as_such(queue: JobQueue, redis: Redis) -> None:
    await queue.ensure_group()
    await redis.xadd(queue.keys.stream, {"hello": "world"})
    [delivery] = await queue.read("c", count=1, block_ms=100)
    assert delivery.entry is None and "job" in delivery.problem
    await queue.discard(delivery)
    assert await redis.xlen(queue.keys.stream) == 0


async def test_backlog_limit_refuses_new_jobs(queue: JobQueue) -> None:
    for _ in range(3):
        job_id = new_job_id()
        await queue.enqueue(job_id, entry_for(job_id), max_backlog=3)
    refused = new_job_id()
    with pytest.raises(BacklogFull) as full:
        await queue.enqueue(refused, entry_for(refused), max_backlog=3)
    assert full.value.backlog == 3
    assert await queue.get_job(refused) is None
    assert await queue.backlog() == 3


async def test_stale_entries_of_a_dead_consumer_are_taken_over(
    queue: JobQueue, redis: Redis
) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("dead", count=1, block_ms=100)
    assert await queue.claim_stale("alive", min_idle_ms=60_000, count=10) == []  # still fresh
    await asyncio.sleep(0.05)
    [taken] = await queue.claim_stale("alive", min_idle_ms=20, count=10)
    assert taken.entry_id == delivery.entry_id and taken.job_id == job_id
    [pending] = await redis.xpending_range(queue.keys.stream, queue.group, "-", "+", 10)
    assert pending["consumer"] == "alive" and pending["times_delivered"] == 2


async def test_claiming_entries_deleted_meanwhile_cleans_the_pending_list(
    queue: JobQueue, redis: Redis
) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("dead", count=1, block_ms=100)
    await redis.xdel(queue.keys.stream, delivery.entry_id)
    await asyncio.sleep(0.05)
    assert await queue.claim_stale("alive", min_idle_ms=20, count=10) == []
    assert (await redis.xpending(queue.keys.stream, queue.group))["pending"] == 0


async def test_keep_alive_refreshes_only_entries_still_held(queue: JobQueue, redis: Redis) -> None:
    await queue.ensure_group()
    ids = [new_job_id() for _ in range(2)]
    for job_id in ids:
        await queue.enqueue(job_id, entry_for(job_id))
    mine, stolen = await queue.read("me", count=2, block_ms=100)
    ten_hours = 36_000_000  # idle set, not waited for: "refreshed" is then plain to see
    await redis.xclaim(
        queue.keys.stream, queue.group, "me", 0, [mine.entry_id], idle=ten_hours, justid=True
    )
    await redis.xclaim(queue.keys.stream, queue.group, "thief", 0, [stolen.entry_id], justid=True)
    held = await queue.keep_alive("me", [mine.ref, stolen.ref])
    assert held == {mine.ref}
    owners = {
        entry["message_id"]: (entry["consumer"], entry["time_since_delivered"])
        for entry in await redis.xpending_range(queue.keys.stream, queue.group, "-", "+", 10)
    }
    assert owners[mine.entry_id][0] == "me" and owners[mine.entry_id][1] < ten_hours // 2
    assert owners[stolen.entry_id][0] == "thief"


async def test_released_entries_are_claimable_at_once(queue: JobQueue) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("leaving", count=1, block_ms=100)
    await queue.release("leaving", [delivery.ref], idle_ms=30_000)
    [taken] = await queue.claim_stale("other", min_idle_ms=30_000, count=10)
    assert taken.entry_id == delivery.entry_id


async def test_exhausted_attempts_are_reported_and_buried(queue: JobQueue, redis: Redis) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    [delivery] = await queue.read("c", count=1, block_ms=100)
    assert await queue.start(delivery, "a", "c", 2) == 1
    assert await queue.start(delivery, "b", "c", 2) == 2
    assert await queue.start(delivery, "c", "c", 2) == StartRefused.EXHAUSTED
    assert await queue.fail(delivery, "", code="poison", message="died", ttl=60, dead_letter=True)
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED and record.attempts == 2
    [(_, letter)] = await redis.xrange(queue.keys.dead)
    assert letter["job"] == job_id and letter["reason"] == "died" and letter["deliveries"] == "2"
    assert await redis.xlen(queue.keys.stream) == 0


async def test_idle_consumers_without_pending_entries_are_removed(
    queue: JobQueue, redis: Redis
) -> None:
    await queue.ensure_group()
    job_id = new_job_id()
    await queue.enqueue(job_id, entry_for(job_id))
    await queue.read("busy", count=1, block_ms=100)
    await redis.xgroup_createconsumer(queue.keys.stream, queue.group, "empty")
    await asyncio.sleep(0.05)
    assert await queue.remove_idle_consumers(idle_ms=20) == ["empty"]
    assert not await queue.remove_consumer_if_idle("busy")
