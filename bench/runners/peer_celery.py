"""Celery with its Redis broker: ``celery -A runners.peer_celery worker -c 2``."""

from __future__ import annotations

from celery import Celery

from runners import tiny_task

app = Celery("bench", broker=tiny_task.redis_url())
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tiny")
def tiny(job_id: str) -> int:
    return tiny_task.process(job_id)


def enqueue(job_ids: list[str]) -> None:
    for job_id in job_ids:
        tiny.delay(job_id)
