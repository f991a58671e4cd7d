"""Dramatiq with its Redis broker: ``dramatiq runners.peer_dramatiq --processes 2 --threads 1``."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from runners import tiny_task

dramatiq.set_broker(RedisBroker(url=tiny_task.redis_url()))


@dramatiq.actor(max_retries=0)
def tiny(job_id: str) -> None:
    tiny_task.process(job_id)


def enqueue(job_ids: list[str]) -> None:
    for job_id in job_ids:
        tiny.send(job_id)
