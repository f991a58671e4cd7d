"""The job every queue in scenario 3 runs: imgstream's own worker step, minus the queue.

Read the original, ``imaging.render`` it, store the result (temporary name, then rename),
exactly as ``imgstream.processing.process_job`` does, with libvips configured as imgstream's
workers configure it. Nothing else: the bench sees every system's progress the same way, by
the results stored. Needs only pyvips and pydantic, so it runs in every peer's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgstream import imaging
from imgstream.operations import JobSpec, Limits, parse_operations_json
from imgstream.storage import LocalStorage

OPERATIONS = os.environ.get("BENCH_OPERATIONS", '[{"op": "grayscale"}]')
SPEC = JobSpec(operations=parse_operations_json(OPERATIONS))
LIMITS = Limits()

_storage: LocalStorage | None = None


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def configure_like_a_worker() -> None:
    """libvips threads and cache as an imgstream worker has them (``context.env`` says which)."""
    imaging.configure(
        concurrency=int(os.environ["IMGSTREAM_VIPS_CONCURRENCY"]),
        cache_max_mem_mb=int(os.environ["IMGSTREAM_VIPS_CACHE_MB"]),
    )


def _setup() -> LocalStorage:
    global _storage
    if _storage is None:
        configure_like_a_worker()
        _storage = LocalStorage(Path(os.environ["BENCH_DATA_DIR"]))
    return _storage


def process(job_id: str) -> int:
    storage = _setup()
    rendered = imaging.render(storage.original_source(job_id), SPEC, LIMITS)
    storage.save_result(job_id, rendered.data, rendered.format.extension)
    return len(rendered.data)
