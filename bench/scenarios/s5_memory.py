"""Memory: peak RSS of one imgstream worker process on a 100-megapixel JPEG, vs Pillow.

A real ``imgstream worker --concurrency 1`` (``IMGSTREAM_MAX_PIXELS`` raised) takes one job;
its process's own high-water mark (``VmHWM``) is read when the job is done. Pillow runs
the same operation in a fresh process of the ``engines`` environment (``ru_maxrss``).
"""

from __future__ import annotations

import json
import time

import redis

from imgstream.jobs import StreamEntry
from imgstream.keys import Keys

import images
from context import Context
from measure import Summary, peak_rss_kib, tree
from queues import link_originals
from report import Table
from scenarios.s0_engines import measure as engine
from service import Imgstream

OPERATIONS = {
    "resize to 800 wide": ("resize", [{"op": "resize", "width": 800}]),
    "blur sigma 2, full resolution": ("blur", [{"op": "blur", "sigma": 2.0}]),
}
TARGET_MIB = 250


def worker_peak(ctx: Context, url: str, steps: list[dict[str, object]]) -> float:
    """Peak RSS in MiB of the one worker process that ran one 100 MP job."""
    data_dir = ctx.directory("s5-data")
    service = Imgstream(
        url,
        data_dir,
        ctx.scratch / "s5.log",
        settings={"IMGSTREAM_MAX_PIXELS": "200000000", "IMGSTREAM_MAX_UPLOAD_BYTES": "104857600"},
    )
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        service.start_workers(1)
        (job_id,) = link_originals(data_dir, images.mp100_jpeg(), 1)
        keys = Keys(service.prefix)
        entry = StreamEntry(job_id=job_id, operations=json.dumps(steps))
        client.xadd(keys.stream, dict(entry.to_fields()))  # type: ignore[arg-type]  # str is fine
        deadline = time.monotonic() + 300
        while client.hget(keys.job(job_id), "status") not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError("the 100 MP job did not finish")
            time.sleep(0.05)
        status = client.hget(keys.job(job_id), "status")
        if status != "done":
            raise RuntimeError(
                f"the 100 MP job ended {status!r}: {client.hgetall(keys.job(job_id))!r}"
            )
        workers = [pid for pid in tree(service.worker_roots()) if pid not in service.worker_roots()]
        return max(peak_rss_kib(pid) for pid in workers) / 1024
    finally:
        service.stop()
        client.close()


def run(ctx: Context) -> list[Table]:
    python = ctx.peer("engines")
    source = images.mp100_jpeg()
    worker: dict[str, list[float]] = {label: [] for label in OPERATIONS}
    pillow: dict[str, float] = {}
    with ctx.redis("s5") as server:
        for _ in range(ctx.rounds):
            for label, (_, steps) in OPERATIONS.items():
                worker[label].append(worker_peak(ctx, server.url, steps))
    if python is not None:
        for label, (op, _) in OPERATIONS.items():
            pillow[label] = engine(python, "pillow", op, source, -1)["peak_rss_kib"] / 1024

    table = Table(
        key="s5",
        title="Scenario 5: peak RSS at 100 MP (10000×10000 JPEG, 17 MB), MiB",
        columns=["operation", "imgstream worker process", "Pillow process", "target"],
    )
    for label in OPERATIONS:
        peak = Summary.of(worker[label])
        target = f"≤ {TARGET_MIB} MiB: {'met' if peak.high <= TARGET_MIB else 'missed'}"
        table.add(
            label,
            peak.show(),
            f"{pillow[label]:,.0f}" if label in pillow else "–",
            target if label.startswith("resize") else "(none set)",
        )
    table.data = {"worker_mib": worker, "pillow_mib": pillow}
    table.notes.append(
        "Worker: `VmHWM` of the worker process (interpreter, libraries and Redis client "
        f"included) over {ctx.rounds} rounds; Pillow: one cold run in a fresh "
        "process."
    )
    return [table]
