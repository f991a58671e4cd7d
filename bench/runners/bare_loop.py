"""The limit of scenario 1: one process calling the worker's own ``process_job`` in a loop.

``python bare_loop.py DATA_DIR OPERATIONS_JSON JOB_ID...``: prints ``ready``, waits for a
line on stdin (so every process starts together), processes its jobs (originals already
stored under DATA_DIR), prints one JSON line with its start, end and CPU time. Before
``ready`` it renders its first image once, unmeasured: warm, as imgstream's workers are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from imgstream import imaging
from imgstream.operations import JobSpec, Limits, parse_operations_json
from imgstream.processing import process_job
from imgstream.storage import LocalStorage

from runners.tiny_task import configure_like_a_worker


def main() -> None:
    data_dir, operations, job_ids = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    configure_like_a_worker()
    storage = LocalStorage(data_dir)
    spec = JobSpec(operations=parse_operations_json(operations))
    limits = Limits()
    imaging.render(storage.original_source(job_ids[0]), spec, limits)  # warm up, unmeasured
    print("ready", flush=True)
    sys.stdin.readline()
    started, cpu_started = time.monotonic(), time.process_time()
    for job_id in job_ids:
        process_job(storage, job_id, spec, limits, 60.0)
    print(
        json.dumps(
            {
                "start": started,
                "end": time.monotonic(),
                "cpu": time.process_time() - cpu_started,
                "jobs": len(job_ids),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
