"""The worker loop in-process against a real Redis: retries, time limits, stopping."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from imgstream.config import Settings
from imgstream.jobs import new_job_id
from imgstream.lifecycle import JobStatus
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import store_and_enqueue

pytestmark = pytest.mark.anyio


class FlakyStorage(LocalStorage):
    """Local storage whose first ``failures`` result writes fail, like a full or flaky disk."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def save_result(self, job_id: str, data: bytes, extension: str) -> Path:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(5, "Input/output error")  # a full disk (28) is waited out instead
        return super().save_result(job_id, data, extension)


async def test_transient_failures_are_retried_and_counted(
    queue: JobQueue, settings: Settings
) -> None:
    fast = settings.model_copy(update={"retry_backoff": 0.01})
    storage = FlakyStorage(fast.data_dir, failures=2)
    job_id = await store_and_enqueue(
        queue, storage, '[{"op":"grayscale"}]', encode(photo(30, 20), "png")
    )
    await Worker(fast, queue, storage).run(burst=True)
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.DONE
    assert record.attempts == 3


async def test_exhausted_retries_fail_the_job_and_dead_letter_it(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    fast = settings.model_copy(update={"retry_backoff": 0.01, "max_attempts": 2})
    storage = FlakyStorage(fast.data_dir, failures=5)
    job_id = await store_and_enqueue(
        queue, storage, '[{"op":"grayscale"}]', encode(photo(30, 20), "png")
    )
    await Worker(fast, queue, storage).run(burst=True)
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.attempts == 2 and record.error is not None
    assert record.error.code == "retries_exhausted"
    assert (
        "Input/output error" in record.error.message
        and "IMGSTREAM_MAX_ATTEMPTS" in record.error.message
    )
    assert await redis.xlen(queue.keys.dead) == 1


async def test_deterministic_failures_are_not_retried(queue: JobQueue, settings: Settings) -> None:
    storage = LocalStorage(settings.data_dir)
    job_id = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', b"not an image at all")
    await Worker(settings, queue, storage).run(burst=True)
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED and record.attempts == 1
    assert record.error is not None and record.error.code == "unsupported_format"


async def test_a_job_over_its_time_limit_is_stopped_and_the_worker_goes_on(
    queue: JobQueue, settings: Settings
) -> None:
    limited = settings.model_copy(
        update={"job_timeout": 0.2, "max_attempts": 2, "retry_backoff": 0.01}
    )
    storage = LocalStorage(limited.data_dir)
    slow = await store_and_enqueue(
        queue, storage, '[{"op":"blur","sigma":60}]', encode(photo(2500, 2500), "png")
    )
    quick = await store_and_enqueue(
        queue, storage, '[{"op":"grayscale"}]', encode(photo(20, 20), "png")
    )
    with anyio.fail_after(30):
        await Worker(limited, queue, storage).run(burst=True)
    slow_record = await queue.get_job(slow)
    assert slow_record is not None and slow_record.status is JobStatus.FAILED
    assert slow_record.error is not None and "IMGSTREAM_JOB_TIMEOUT" in slow_record.error.message
    assert slow_record.attempts == 2
    quick_record = await queue.get_job(quick)
    assert quick_record is not None and quick_record.status is JobStatus.DONE


@pytest.mark.parametrize(
    ("operations", "setting"),
    [
        ('[{"op":"blur","sigma":900}]', "IMGSTREAM_MAX_SIGMA"),
        ("[" + ",".join(['{"op":"grayscale"}'] * 40) + "]", "IMGSTREAM_MAX_STEPS"),
        ('[{"op":"resize","width":30000}]', "IMGSTREAM_MAX_DIMENSION"),
    ],
)
async def test_an_entry_beyond_the_limits_fails_whatever_wrote_it(
    queue: JobQueue, redis: Redis, settings: Settings, operations: str, setting: str
) -> None:
    """A raw ``XADD`` as docs/wire-format.md describes it, bypassing the API's checks."""
    storage = LocalStorage(settings.data_dir)
    await queue.ensure_group()
    job_id = new_job_id()
    storage.save_original(job_id, io.BytesIO(encode(photo(30, 20), "png")))
    await redis.xadd(queue.keys.stream, {"job": job_id, "operations": operations})
    await Worker(settings, queue, storage).run(burst=True)
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED, record
    assert record.error is not None and record.error.code == "limit_exceeded"
    assert setting in record.error.message
    assert storage.find_result(job_id, "png") is None
