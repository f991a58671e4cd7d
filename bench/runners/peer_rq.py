"""RQ: ``rq worker`` (forking) or ``rq worker -w rq.worker.SimpleWorker``, one per process."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from runners import tiny_task


def tiny(job_id: str) -> int:
    return tiny_task.process(job_id)


def enqueue(job_ids: list[str]) -> None:
    queue = Queue("default", connection=Redis.from_url(tiny_task.redis_url()))
    for job_id in job_ids:
        queue.enqueue(tiny, job_id)
