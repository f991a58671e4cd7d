"""The limit of scenario 3: a Redis Streams consumer with no framework at all.

``python bare_stream.py URL STREAM GROUP DATA_DIR``: XREADGROUP COUNT 100 → the same work
as an imgstream worker (``process_job``) for each entry → one pipeline with XACK + XDEL and
a status HSET per job. Runs until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from imgstream.operations import JobSpec, Limits, parse_operations_json
from imgstream.processing import process_job
from imgstream.storage import LocalStorage

from runners.tiny_task import configure_like_a_worker

running = True


def stop(_signum: int, _frame: FrameType | None) -> None:
    global running
    running = False


def main() -> None:
    url, stream, group, data_dir = sys.argv[1:5]
    signal.signal(signal.SIGTERM, stop)
    configure_like_a_worker()
    client = redis.Redis.from_url(url)
    storage = LocalStorage(Path(data_dir))
    spec = JobSpec(operations=parse_operations_json(os.environ["BENCH_OPERATIONS"]))
    limits = Limits()
    consumer = f"bare-{os.getpid()}"
    while running:
        reply: Any = client.xreadgroup(group, consumer, {stream: ">"}, count=100, block=200)
        if not reply:
            continue
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
        pipe = client.pipeline(transaction=False)
        for _entry_id, fields in entries:
            job_id = fields[b"job"].decode()
            result = process_job(storage, job_id, spec, limits, 60.0)
            pipe.hset(
                f"{stream}:{job_id}",
                mapping={"status": "done", "result_bytes": result.bytes},
            )
        ids = [entry_id for entry_id, _ in entries]
        pipe.xack(stream, group, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()


if __name__ == "__main__":
    main()
