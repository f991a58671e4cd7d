"""What a worker spends per job beyond the render, and what Redis spends: tiny jobs (64x64 PNG
-> grayscale) drained by one in-process burst ``Worker`` against a private redis-server.

Figures per job: Redis CPU (``INFO cpu``), Redis commands and requests read off a socket
(``INFO stats``), the worker's CPU (all its threads), and the worker's CPU beyond the render
(minus ``process_job`` run alone in a loop on the same jobs' originals, in the same process).

    .venv/bin/python bench/worker_costs.py                 # this checkout, 3 rounds
    .venv/bin/python bench/worker_costs.py --against DIR   # alternated with DIR/src
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = 400
OPERATIONS = '[{"op":"grayscale"}]'


def tiny_png() -> bytes:
    import pyvips

    image = pyvips.Image.black(64, 64, bands=3).linear([1, 1, 1], [40, 120, 200])
    return bytes(image.cast("uchar").pngsave_buffer())


async def one_round(redis_url: str, data_dir: Path, jobs: int) -> dict[str, float]:
    from imgstream.config import Settings
    from imgstream.connection import connect
    from imgstream.jobs import StreamEntry
    from imgstream.keys import Keys
    from imgstream.operations import spec_from_entry
    from imgstream.processing import process_job
    from imgstream.queue import JobQueue
    from imgstream.storage import LocalStorage
    from imgstream.worker import Worker

    prefix = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    settings = Settings(
        redis_url=redis_url, data_dir=data_dir, key_prefix=prefix, read_batch=16, max_backlog=0
    )
    redis = connect(settings.effective_redis_url)
    queue = JobQueue(redis, Keys(prefix), settings.group)
    storage = LocalStorage(settings.data_dir)
    await queue.ensure_group()
    data = tiny_png()
    job_ids = []
    for _ in range(jobs):
        job_id = queue.new_job_id()
        storage.save_original(job_id, io.BytesIO(data))
        await queue.enqueue(job_id, StreamEntry(job_id, OPERATIONS))
        job_ids.append(job_id)

    async def server() -> tuple[float, int, int]:
        cpu = await redis.info("cpu")
        stats = await redis.info("stats")
        return (
            float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            int(stats["total_commands_processed"]),
            int(stats["total_reads_processed"]),
        )

    worker = Worker(settings, queue, storage)
    cpu0, commands0, reads0 = await server()
    began = time.process_time()
    await worker.run(burst=True)
    worker_cpu = time.process_time() - began
    cpu1, commands1, reads1 = await server()
    for job_id in job_ids[:: max(1, jobs // 20)]:
        record = await queue.get_job(job_id)
        assert record is not None and record.status.value == "done", record
    spec = spec_from_entry(OPERATIONS, {}, settings.limits)
    began = time.process_time()
    for job_id in job_ids:
        process_job(storage, job_id, spec, settings.limits, 60.0, settings.placeholders)
    render_cpu = time.process_time() - began
    await redis.aclose()
    return {
        "redis_us": (cpu1 - cpu0) / jobs * 1e6,
        "commands": (commands1 - commands0 - 2) / jobs,
        "reads": (reads1 - reads0 - 2) / jobs,
        "worker_ms": worker_cpu / jobs * 1e3,
        "beyond_render_ms": (worker_cpu - render_cpu) / jobs * 1e3,
    }


def child(redis_url: str, jobs: int) -> None:
    from imgstream import imaging

    imaging.configure(concurrency=1, cache_max_mem_mb=0)
    with tempfile.TemporaryDirectory() as scratch:
        figures = asyncio.run(one_round(redis_url, Path(scratch), jobs))
    print(json.dumps(figures))


def run_in(src: Path, redis_url: str, jobs: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", redis_url, "--jobs", str(jobs)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"the measuring process failed:\n{out.stderr}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout to alternate with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--child", metavar="REDIS_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.jobs)
        return
    from imgstream.redis_server import RedisServer

    here = Path(__file__).resolve().parent.parent / "src"
    variants = {"this checkout": here}
    if args.against:
        variants = {"other": args.against.resolve() / "src", **variants}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch)) as server:
        for _ in range(args.rounds):
            for name, src in variants.items():
                results[name].append(run_in(src, server.url, args.jobs))
    columns = ["redis_us", "commands", "reads", "worker_ms", "beyond_render_ms"]
    print(
        f"| variant ({args.jobs} jobs x {args.rounds} rounds, median [min-max]) | "
        + " | ".join(columns)
        + " |"
    )
    print("|---" * (len(columns) + 1) + "|")
    for name, rounds in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in rounds]
            cells.append(f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
