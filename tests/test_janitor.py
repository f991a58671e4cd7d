"""Retention against real Redis and a real data directory: expired jobs' files go, live ones
stay, orphans and stale temporaries go, one sweep at a time, storage figures for the stats."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from imgstream.config import Settings
from imgstream.deadletters import DeadLetters
from imgstream.fleet_snapshot import Monitor
from imgstream.janitor import TEMPORARY_AGE, Janitor
from imgstream.jobs import ResultInfo, new_job_id
from imgstream.lifecycle import JobStatus
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage

from inprocess import store_and_enqueue

pytestmark = pytest.mark.anyio

OPS = '[{"op":"grayscale"}]'
HOUR = 3600.0


async def job_with_files(
    queue: JobQueue, storage: LocalStorage, *, outcome: str | None, ttl: int = 1
) -> str:
    """A job with its original (and a result when done), left queued or ended with ``ttl``."""
    job_id = await store_and_enqueue(queue, storage, OPS, b"original bytes")
    if outcome is None:
        return job_id
    [delivery] = await queue.read("c", count=1, block_ms=10)
    await queue.start(delivery, "lease", "c", 3)
    if outcome == "done":
        storage.save_result(job_id, b"result bytes", "png")
        await queue.complete(delivery, "lease", ResultInfo(1, 1, "png", 12), ttl=ttl)
    else:
        await queue.fail(delivery, "lease", code="x", message="no", ttl=ttl, dead_letter=True)
    return job_id


def files_of(storage: LocalStorage, job_id: str) -> list[str]:
    return sorted(
        path.name
        for directory in (storage.originals, storage.results)
        for path in directory.iterdir()
        if path.name.startswith(job_id)
    )


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


async def run_out(redis: Redis, queue: JobQueue, job_id: str) -> None:
    """Bring the end of an ended job's TTL forward to now: Redis expires its hash, and the
    time ``finish.lua`` noted for the janitor has passed (set, not waited for)."""
    assert await redis.pexpireat(queue.keys.job(job_id), 1)  # a time past: gone at once
    assert not await redis.exists(queue.keys.job(job_id))
    await redis.zadd(queue.keys.expiry, {job_id: 0})


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.data_dir)


@pytest.fixture
def janitor(redis: Redis, queue: JobQueue, storage: LocalStorage) -> Janitor:
    return Janitor(redis, queue.keys, storage)


async def test_expired_jobs_lose_their_files_and_live_jobs_keep_theirs(
    queue: JobQueue, redis: Redis, storage: LocalStorage, janitor: Janitor
) -> None:
    done = await job_with_files(queue, storage, outcome="done", ttl=600)
    failed = await job_with_files(queue, storage, outcome="failed", ttl=600)
    kept = await job_with_files(queue, storage, outcome="done", ttl=600)
    queued = await job_with_files(queue, storage, outcome=None)
    assert await redis.zcard(queue.keys.expiry) == 3  # noted by finish.lua, for ended jobs only

    early = await janitor.sweep()
    assert early is not None and early.expired_jobs == 0
    assert files_of(storage, done) == [done, f"{done}.png"]

    for job_id in (done, failed):
        await run_out(redis, queue, job_id)
    sweep = await janitor.sweep()
    assert sweep is not None
    assert sweep.expired_jobs == 2 and sweep.files_removed == 3
    assert files_of(storage, done) == [] and files_of(storage, failed) == []
    assert files_of(storage, kept) == [kept, f"{kept}.png"]
    assert files_of(storage, queued) == [queued]
    assert await redis.zrange(queue.keys.expiry, 0, -1) == [kept]
    assert (sweep.storage.originals, sweep.storage.results) == (2, 1)
    assert sweep.storage.originals_bytes == 2 * len(b"original bytes")


async def test_a_job_retried_from_the_dead_letters_is_live_again(
    queue: JobQueue, redis: Redis, storage: LocalStorage, janitor: Janitor
) -> None:
    job_id = await job_with_files(queue, storage, outcome="failed", ttl=600)
    [letter] = await DeadLetters(redis, queue.keys).list()
    assert await DeadLetters(redis, queue.keys).retry(letter.entry_id)
    await redis.zadd(queue.keys.expiry, {job_id: 0})  # the noted expiry has passed, but the
    assert await redis.ttl(queue.keys.job(job_id)) == -1  # hash lives on without a TTL
    sweep = await janitor.sweep()
    assert sweep is not None and sweep.expired_jobs == 0
    assert files_of(storage, job_id) == [job_id]
    assert await redis.zcard(queue.keys.expiry) == 0
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.QUEUED


async def test_orphans_and_stale_temporaries_go_and_nothing_else(
    queue: JobQueue, redis: Redis, storage: LocalStorage, janitor: Janitor
) -> None:
    orphan, young_orphan = new_job_id(), new_job_id()
    for job_id in (orphan, young_orphan):
        storage.save_original(job_id, io.BytesIO(b"lost"))
    storage.save_result(orphan, b"lost result", "webp")
    age(storage.originals / orphan, 2 * HOUR)
    age(storage.results / f"{orphan}.webp", 2 * HOUR)
    old_but_queued = await job_with_files(queue, storage, outcome=None)
    age(storage.originals / old_but_queued, 2 * HOUR)
    stale = storage.results / f".{new_job_id()}.png.0123.tmp"
    fresh = storage.originals / f".{new_job_id()}.0456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    age(stale, TEMPORARY_AGE + 60)
    foreign = storage.originals / "README.txt"
    foreign.write_text("not ours")
    age(foreign, 100 * HOUR)

    sweep = await janitor.sweep()
    assert sweep is not None
    assert (sweep.orphans, sweep.temporaries, sweep.files_removed) == (1, 1, 3)
    assert files_of(storage, orphan) == [] and not stale.exists()
    assert files_of(storage, young_orphan) == [young_orphan]
    assert files_of(storage, old_but_queued) == [old_but_queued]
    assert fresh.exists() and foreign.exists()
    assert (sweep.storage.originals, sweep.storage.results, sweep.storage.temporary) == (2, 0, 1)
    stats = (await Monitor(redis, queue.keys, queue.group, live_within=30).snapshot()).to_json()
    assert stats["storage"]["originals"] == 2 and stats["storage"]["scanned_at"] > 0


async def test_one_sweep_at_a_time_and_one_per_interval(
    queue: JobQueue, redis: Redis, janitor: Janitor
) -> None:
    await redis.set(queue.keys.janitor_lock, "someone else", px=10_000)
    assert await janitor.sweep() is None  # another process holds the lock
    assert await redis.get(queue.keys.janitor_lock) == "someone else"  # and keeps it
    await redis.delete(queue.keys.janitor_lock)

    assert await janitor.sweep_if_due(30, "worker-a") is not None
    assert await janitor.sweep_if_due(30, "worker-b") is None  # worker-a swept this interval
    assert await redis.exists(queue.keys.janitor_lock) == 0  # released after the sweep
    assert await janitor.sweep() is not None  # `imgstream gc` is not held to the schedule


async def test_gc_command(queue: JobQueue, storage: LocalStorage, settings: Settings) -> None:
    job_id = await job_with_files(queue, storage, outcome="done", ttl=1)
    await anyio.sleep(1.1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_")},
        "REDIS_URL": settings.effective_redis_url,
        "IMGSTREAM_KEY_PREFIX": settings.key_prefix,
        "IMGSTREAM_DATA_DIR": str(settings.data_dir),
    }
    with anyio.fail_after(30):
        completed = await anyio.run_process(
            [sys.executable, "-m", "imgstream", "gc"], env=env, check=False
        )
    output = completed.stdout.decode()
    assert completed.returncode == 0, completed.stderr.decode()
    assert "removed 2 files" in output and "1 expired jobs" in output
    assert files_of(storage, job_id) == []
