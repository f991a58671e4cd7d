"""Processing efficiency: imgstream end to end vs a bare loop over the same work, 2 processes.

(a) the limit: two processes calling the worker's own ``process_job`` (read original,
``imaging.render``, store the result) over half the images each; (b) imgstream: HTTP
uploads (4 keep-alive connections) → API → stream → ``imgstream worker --concurrency 2`` →
result stored and status ``done``. The two alternate within each round; both are warm (each
bare loop renders one image before it is timed; the workers a few jobs before round 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from imgstream.jobs import new_job_id

import images
from context import RUNNERS, Context, env, main_python
from measure import Summary, machine_busy, tree_cpu
from report import Table
from service import Imgstream, count_status, upload_all, wait_drained

OPERATIONS = {
    "resize": ([{"op": "resize", "width": 800}], 0.90),
    "grayscale": ([{"op": "grayscale"}], 0.85),
    "blur": ([{"op": "blur", "sigma": 2.0}], 0.85),
}
PROCESSES = 2
CONNECTIONS = 4


def bare_loop(
    ctx: Context, source: Path, operations: str, count: int
) -> tuple[float, float, float]:
    """Images/s, CPU s per image, and others' load (cores) for two ``process_job`` loops."""
    data_dir = ctx.directory("s1-bare")
    originals = data_dir / "originals"
    originals.mkdir()
    job_ids = [new_job_id() for _ in range(count)]
    for job_id in job_ids:
        os.link(source, originals / job_id)
    halves = [job_ids[index::PROCESSES] for index in range(PROCESSES)]
    processes = [
        subprocess.Popen(
            [main_python(), str(RUNNERS / "bare_loop.py"), str(data_dir), operations, *half],
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for half in halves
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    machine_before = machine_busy()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = []
    for process in processes:
        output, _ = process.communicate(timeout=600)
        reports.append(json.loads(output.strip().splitlines()[-1]))
    elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    ours = sum(r["cpu"] for r in reports)
    others = max(0.0, machine_busy() - machine_before - ours) / elapsed
    shutil.rmtree(data_dir, ignore_errors=True)
    return count / elapsed, ours / count, others


def end_to_end(
    service: Imgstream,
    client: redis.Redis,
    data: bytes,
    operations: str,
    count: int,
    redis_pid: int,
) -> dict[str, float]:
    roots = {
        "api": service.api_roots(),
        "workers": service.worker_roots(),
        "redis": [redis_pid],
    }
    before = {name: tree_cpu(pids) for name, pids in roots.items()}
    client_before = time.process_time()  # this process only, not the bare loops it reaped
    machine_before = machine_busy()
    started = time.monotonic()
    ids, _ = asyncio.run(
        upload_all(service.port, data, {"operations": operations}, count, CONNECTIONS)
    )
    finished = wait_drained(client, service.stream)
    result = {"rate": count / (finished - started)}
    for name, pids in roots.items():
        result[f"cpu_{name}_ms"] = 1000 * (tree_cpu(pids) - before[name]) / count
    result["cpu_client_ms"] = 1000 * (time.process_time() - client_before) / count
    ours = sum(result[f"cpu_{name}_ms"] for name in (*roots, "client")) * count / 1000
    result["other_cores"] = max(0.0, machine_busy() - machine_before - ours) / (finished - started)
    done = count_status(client, [service.job_key(job_id) for job_id in ids])
    if done != count:
        raise RuntimeError(f"only {done} of {count} jobs ended done")
    for folder in ("originals", "results"):  # keep the disk small between rounds
        for path in (service.data_dir / folder).iterdir():
            path.unlink()
    return result


def run(ctx: Context) -> list[Table]:
    count = ctx.count(200, 40)
    source = images.hd_jpeg()
    data = source.read_bytes()
    bare: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    bare_cpu: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    bare_others: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    e2e: dict[str, list[dict[str, float]]] = {op: [] for op in OPERATIONS}
    with ctx.redis("s1") as server:
        assert server.process is not None
        service = Imgstream(server.url, ctx.directory("s1-service"), ctx.scratch / "s1.log")
        client = redis.Redis.from_url(server.url)
        try:
            service.start_api()
            service.start_workers(PROCESSES)
            for steps, _ in OPERATIONS.values():  # warm, as each bare loop warms itself
                end_to_end(service, client, data, json.dumps(steps), 2 * PROCESSES,
                           server.process.pid)  # fmt: skip
            for round_number in range(ctx.rounds):
                for op, (steps, _) in OPERATIONS.items():
                    operations = json.dumps(steps)
                    bare_first = round_number % 2 == 0
                    for system in ("bare", "e2e") if bare_first else ("e2e", "bare"):
                        if system == "bare":
                            rate, cpu, others = bare_loop(ctx, source, operations, count)
                            bare[op].append(rate)
                            bare_cpu[op].append(cpu)
                            bare_others[op].append(others)
                        else:
                            e2e[op].append(
                                end_to_end(
                                    service, client, data, operations, count, server.process.pid
                                )
                            )
        finally:
            client.close()
            service.stop()

    table = Table(
        key="s1",
        title=(
            f"Scenario 1: processing efficiency, {count} JPEG 1920×1080 per run, "
            "images/s (median, range)"
        ),
        columns=[
            "op",
            "(a) bare loop",
            "(b) imgstream e2e",
            "(b)/(a) per round",
            "(b)/(a) by CPU per image",
            "target",
            "CPU ms/img (a)",
            "CPU ms/img (b): api + workers + redis",
            "client CPU ms/img",
            "others' load, cores (a / b)",
        ],
    )
    for op, (_, target) in OPERATIONS.items():
        a = Summary.of(bare[op])
        b = Summary.of([run["rate"] for run in e2e[op]])
        ratios = Summary.of(
            [run["rate"] / rate for run, rate in zip(e2e[op], bare[op], strict=True)]
        )
        parts = {
            name: Summary.of([run[f"cpu_{name}_ms"] for run in e2e[op]]).median
            for name in ("api", "workers", "redis", "client")
        }
        by_cpu = 1000 * Summary.of(bare_cpu[op]).median / sum(parts.values())
        table.add(
            op,
            a.show(1),
            b.show(1),
            f"{ratios.median:.0%} ({ratios.low:.0%}–{ratios.high:.0%})",
            f"{by_cpu:.0%}",
            f"≥ {target:.0%}: {'met' if ratios.median >= target else 'missed'}"
            f" (by CPU: {'met' if by_cpu >= target else 'missed'})",
            f"{1000 * Summary.of(bare_cpu[op]).median:.1f}",
            f"{parts['api']:.1f} + {parts['workers']:.1f} + {parts['redis']:.2f}",
            f"{parts['client']:.2f}",
            f"{Summary.of(bare_others[op]).median:.2f} / "
            f"{Summary.of([run['other_cores'] for run in e2e[op]]).median:.2f}",
        )
        table.data[op] = {
            "bare_rate": a.as_json(),
            "e2e_rate": b.as_json(),
            "ratio": ratios.as_json(),
            "e2e_runs": e2e[op],
            "bare_cpu_s": bare_cpu[op],
        }
    table.notes.append(
        "The load generator (a minimal asyncio HTTP/1.1 client, 4 connections) shares the "
        "two cores with the service; its CPU is shown separately and counted in (b)."
    )
    table.notes.append(
        "(b)/(a) by CPU = CPU per image of the bare loop ÷ everything imgstream's path spent "
        "per image (API, workers, Redis, client): the ratio with nothing else on the machine."
    )
    return [table]
