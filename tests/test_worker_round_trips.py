"""The worker's round trips per job, counted by the Redis server itself (``INFO stats``
``total_reads_processed``: one per request it read off a socket), not by timing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from imgstream.config import Settings
from imgstream.jobs import JobStatus
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import store_and_enqueue

pytestmark = pytest.mark.anyio

JOBS = 32


async def reads(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_a_batch_costs_about_one_round_trip_per_job(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    """Each job's outcome goes with the next entry's start, and the batch's counters go in one
    pipeline when it ends: start, outcome and counters were three round trips per job, then
    two (the outcome and next start, the counters); now one."""
    storage = LocalStorage(settings.data_dir)
    data = encode(photo(16, 16), "png")
    job_ids = [
        await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', data) for _ in range(JOBS)
    ]
    batch = settings.model_copy(update={"read_batch": JOBS})
    worker = Worker(batch, queue, storage)
    before = await reads(redis)
    await worker.run(burst=True)
    spent = await reads(redis) - before - 1  # less our own INFO
    for job_id in job_ids:
        record = await queue.get_job(job_id)
        assert record is not None and record.status is JobStatus.DONE and record.attempts == 1
    # Joining, recovery, hygiene, the reads, the counters and leaving take a fixed dozen or
    # so: two round trips per job measured 2 * JOBS + 14, one JOBS + 15; the bound is midway.
    assert spent <= 1.5 * JOBS + 15, spent
