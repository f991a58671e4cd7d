"""Enqueue jobs through a peer's own client: ``python -m runners.enqueue_peer PEER IDS_FILE``.

Prints one JSON line: how many were enqueued and how long it took (imports excluded).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path


def main() -> None:
    peer, ids_file = sys.argv[1], Path(sys.argv[2])
    module = importlib.import_module(f"runners.peer_{peer}")
    job_ids = ids_file.read_text().split()
    started, cpu_started = time.perf_counter(), time.process_time()
    module.enqueue(job_ids)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(json.dumps({"jobs": len(job_ids), "seconds": seconds, "cpu": cpu}))


if __name__ == "__main__":
    main()
