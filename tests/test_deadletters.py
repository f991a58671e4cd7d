"""Dead letters: what a poisoned or exhausted job leaves, and how an operator brings it back."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from imgstream.config import Settings
from imgstream.deadletters import DeadLetters
from imgstream.jobs import StreamEntry, new_job_id
from imgstream.lifecycle import JobStatus
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import store_and_enqueue

pytestmark = pytest.mark.anyio


async def bury_new_job(queue: JobQueue, storage: LocalStorage) -> str:
    original = encode(photo(40, 30), "png")
    job_id = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', original)
    [delivery] = await queue.read("doomed", count=1, block_ms=100)
    await queue.start(delivery, "lease", "doomed", 1)
    await queue.fail(delivery, "lease", code="x", message="gave up", ttl=60, dead_letter=True)
    return job_id


async def test_list_retry_and_process_again(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    storage = LocalStorage(settings.data_dir)
    job_id = await bury_new_job(queue, storage)
    letters = DeadLetters(redis, queue.keys)
    [letter] = await letters.list()
    assert (letter.job_id, letter.reason, letter.deliveries) == (job_id, "gave up", 1)
    assert letter.failed_at

    assert await letters.retry(letter.entry_id) is not None
    assert await letters.count() == 0
    requeued = await queue.get_job(job_id)
    assert requeued is not None
    assert requeued.status is JobStatus.QUEUED and requeued.attempts == 0 and requeued.error is None
    assert await redis.ttl(queue.keys.job(job_id)) == -1
    assert await letters.retry(letter.entry_id) is None  # gone

    await Worker(settings, queue, storage).run(burst=True)
    done = await queue.get_job(job_id)
    assert done is not None and done.status is JobStatus.DONE and done.attempts == 1


async def test_a_retried_job_keeps_its_output_options(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    storage = LocalStorage(settings.data_dir)
    await queue.ensure_group()
    job_id = new_job_id()
    storage.save_original(job_id, io.BytesIO(encode(photo(40, 30), "png")))
    options = (("quality", "40"), ("max_bytes", "50000"), ("strip", "false"))
    await queue.enqueue(job_id, StreamEntry(job_id, '[{"op":"grayscale"}]', "jpeg", options))
    [delivery] = await queue.read("doomed", count=1, block_ms=100)
    await queue.start(delivery, "lease", "doomed", 1)
    await queue.fail(delivery, "lease", code="x", message="gave up", ttl=60, dead_letter=True)
    letters = DeadLetters(redis, queue.keys)
    [letter] = await letters.list()

    new_entry = await letters.retry(letter.entry_id)
    assert new_entry is not None
    [(_, fields)] = await redis.xrange(queue.keys.stream, new_entry, new_entry)
    assert StreamEntry.from_fields(fields) == StreamEntry(
        job_id, '[{"op":"grayscale"}]', "jpeg", options
    )


async def test_retry_all_and_purge(queue: JobQueue, redis: Redis, settings: Settings) -> None:
    storage = LocalStorage(settings.data_dir)
    for _ in range(3):
        await bury_new_job(queue, storage)
    letters = DeadLetters(redis, queue.keys)
    assert await letters.retry_all() == 3
    assert await queue.backlog() == 3
    await bury_new_job(queue, storage)
    assert await letters.purge() == 1
    assert await letters.count() == 0


async def test_dlq_command(queue: JobQueue, settings: Settings) -> None:
    job_id = await bury_new_job(queue, LocalStorage(settings.data_dir))
    env = {
        **os.environ,
        "REDIS_URL": settings.effective_redis_url,
        "IMGSTREAM_KEY_PREFIX": settings.key_prefix,
    }

    def dlq(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imgstream", "dlq", *arguments],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    listed = dlq("list")
    assert listed.returncode == 0 and job_id in listed.stdout and "gave up" in listed.stdout
    entry_id = listed.stdout.split()[0]
    assert dlq("retry").returncode == 2
    assert dlq("retry", "0-1").returncode == 1
    retried = dlq("retry", entry_id)
    assert retried.returncode == 0, retried.stderr
    assert dlq("list").stdout == ""
    assert "purged 0" in dlq("purge").stdout
