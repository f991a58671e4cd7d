"""The job every queue in scenario 3 runs: imgstream's own worker step, minus the queue.

Read the original, ``imaging.render`` it, store the result (temporary name, then rename),
exactly as ``imgstream.processing.process_job`` does; then count it done in Redis, which is how
the bench sees a peer's progress (imgstream's own progress is its stream length).
Needs only pyvips, pydantic and redis, so it runs in every peer's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

from imgstream import imaging
from imgstream.operations import JobSpec, Limits, parse_operations_json
from imgstream.storage import LocalStorage

DONE_KEY = "bench:done"
OPERATIONS = os.environ.get("BENCH_OPERATIONS", '[{"op": "grayscale"}]')
SPEC = JobSpec(operations=parse_operations_json(OPERATIONS))
LIMITS = Limits()

_storage: LocalStorage | None = None
_redis: redis.Redis | None = None


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def _setup() -> tuple[LocalStorage, redis.Redis]:
    global _storage, _redis
    if _storage is None or _redis is None:
        imaging.configure(concurrency=1, cache_max_mem_mb=64)  # as imgstream's workers
        _storage = LocalStorage(Path(os.environ["BENCH_DATA_DIR"]))
        _redis = redis.Redis.from_url(redis_url())
    return _storage, _redis


def process(job_id: str) -> int:
    storage, client = _setup()
    rendered = imaging.render(storage.original_source(job_id), SPEC, LIMITS)
    storage.save_result(job_id, rendered.data, rendered.format.extension)
    client.incr(DONE_KEY)
    return len(rendered.data)
