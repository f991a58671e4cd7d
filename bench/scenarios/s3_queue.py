"""Per-job overhead: tiny jobs (64×64 PNG → grayscale) through imgstream's queue and its peers.

Each system drains a pre-filled queue with 2 worker processes against the same private
Redis (flushed in between), every job doing the same work (imgstream's ``process_job``:
read the original, ``imaging.render``, store the result). The limit is a bare Redis Streams
loop. Then imgstream end to end over HTTP, with many concurrent clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import redis

import images
from context import Context
from measure import Summary, tree_cpu
from queues import Drain, Setup, bare_system, imgstream_system, link_originals, measure, peer_system
from report import Table
from service import Imgstream, count_status, upload_all, wait_drained

OPERATIONS = json.dumps([{"op": "grayscale"}])
PEERS = ("dramatiq", "saq", "arq", "celery", "rq", "rq-fork")
PROCESSES = 2
HTTP_CONNECTIONS = 32


def run(ctx: Context) -> list[Table]:
    source = images.tiny_png()
    counts = {
        "imgstream": ctx.count(500, 300),
        "bare": ctx.count(500, 300),
        "peer": ctx.count(200, 150),
        "rq-fork": ctx.count(30, 20),
    }
    installed = ctx.install_peers(["dramatiq", "saq", "arq", "celery", "rq"])
    missing = [name for name, found in installed.items() if not isinstance(found, os.PathLike)]
    drains: dict[str, list[Drain]] = {}
    http: list[dict[str, float]] = []
    with ctx.redis("s3") as server:
        assert server.process is not None
        setup = Setup(
            url=server.url,
            redis_pid=server.process.pid,
            data_dir=ctx.scratch / "s3-data",
            operations=OPERATIONS,
            log=ctx.scratch / "s3.log",
        )
        systems = {
            "imgstream": imgstream_system(server.url, "bench", OPERATIONS, PROCESSES),
            "bare": bare_system(server.url, setup.data_dir, OPERATIONS),
        }
        for name in PEERS:
            python = installed.get(name.split("-")[0])
            if isinstance(python, os.PathLike):
                systems[name] = peer_system(name, python, PROCESSES)
        names = list(systems)
        for round_number in range(ctx.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                ctx.directory("s3-data")
                count = counts.get(name, counts["peer"])
                ids = link_originals(setup.data_dir, source, count)
                drain = measure(systems[name], setup, ids)
                drains.setdefault(name, []).append(drain)
                print(
                    f"  round {round_number + 1} {drain.system}: {drain.drain_rate:,.0f} jobs/s",
                    flush=True,
                )
            http.append(http_end_to_end(ctx, server.url, server.process.pid, source.read_bytes()))

    return [queue_table(drains, counts, missing), http_table(http)]


def http_end_to_end(ctx: Context, url: str, redis_pid: int, data: bytes) -> dict[str, float]:
    """Uploads over many connections → API → 2 workers → done; jobs/s over the whole run."""
    count = ctx.count(300, 200)
    client = redis.Redis.from_url(url)
    client.flushall()
    service = Imgstream(url, ctx.directory("s3-http"), ctx.scratch / "s3-http.log")
    try:
        service.start_api()
        service.start_workers(PROCESSES)
        roots = {
            "api": service.api_roots(),
            "workers": service.worker_roots(),
            "redis": [redis_pid],
        }
        cpu_before = {name: tree_cpu(pids) for name, pids in roots.items()}
        client_cpu = time.process_time()
        started = time.monotonic()
        ids, _latencies = asyncio.run(
            upload_all(service.port, data, {"operation": "grayscale"}, count, HTTP_CONNECTIONS)
        )
        uploaded = time.monotonic()
        finished = wait_drained(client, service.stream)
        cpu = {f"cpu_{name}_ms": 1000 * (tree_cpu(pids) - cpu_before[name]) / count
               for name, pids in roots.items()}  # fmt: skip
        cpu["cpu_client_ms"] = 1000 * (time.process_time() - client_cpu) / count
        done = count_status(client, [service.job_key(job_id) for job_id in ids])
        if done != count:
            raise RuntimeError(f"only {done} of {count} HTTP jobs ended done")
    finally:
        service.stop()
        client.close()
    return {
        "jobs": count,
        "rate": count / (finished - started),
        "upload_rate": count / (uploaded - started),
        **cpu,
    }


def queue_table(
    drains: dict[str, list[Drain]], counts: dict[str, int], missing: list[str]
) -> Table:
    table = Table(
        key="s3",
        title="Scenario 3: per-job overhead, tiny jobs (64×64 PNG → grayscale), 2 worker processes",
        columns=[
            "system",
            "jobs",
            "enqueue jobs/s",
            "drain jobs/s (median, range)",
            "imgstream ÷ system",
            "worker CPU ms/job",
            "Redis CPU µs/job",
            "CPU-bound capacity jobs/s",
            "imgstream ÷ system (capacity)",
            "others' load, cores",
        ],
    )
    reference = Summary.of([drain.drain_rate for drain in drains.get("imgstream", [])])
    capacity = {
        name: Summary.of([_capacity(drain) for drain in runs]) for name, runs in drains.items()
    }
    best_peer = best_capacity = 0.0
    for name, runs in drains.items():
        rate = Summary.of([drain.drain_rate for drain in runs])
        if name not in ("imgstream", "bare"):
            best_peer = max(best_peer, rate.median)
            best_capacity = max(best_capacity, capacity[name].median)
        table.add(
            runs[0].system,
            runs[0].jobs,
            Summary.of([drain.enqueue_rate for drain in runs]).show(),
            rate.show(),
            f"{reference.median / rate.median:.2f}×" if rate.median else "–",
            Summary.of([drain.worker_cpu_ms for drain in runs]).show(2),
            Summary.of([drain.redis_cpu_us for drain in runs]).show(),
            capacity[name].show(),
            f"{capacity['imgstream'].median / capacity[name].median:.2f}×",
            Summary.of([drain.other_cores for drain in runs]).show(2),
        )
    table.data = {name: [drain.as_json() for drain in runs] for name, runs in drains.items()}
    bare = Summary.of([drain.drain_rate for drain in drains.get("bare", [])])
    if best_peer and reference.median == reference.median:
        versus_peer = reference.median / best_peer
        versus_bare = reference.median / bare.median
        table.notes.append(
            f"Targets, on drain rates: imgstream ≥ 3× the fastest framework — "
            f"{versus_peer:.2f}× ({'met' if versus_peer >= 3 else 'missed'}); ≥ 70 % of the "
            f"bare loop — {versus_bare:.0%} ({'met' if versus_bare >= 0.7 else 'missed'})."
        )
        ours = capacity["imgstream"].median
        versus_peer, versus_bare = ours / best_capacity, ours / capacity["bare"].median
        table.notes.append(
            f"Targets, on CPU-bound capacity (robust to others' load): ≥ 3× the fastest "
            f"framework — {versus_peer:.2f}× ({'met' if versus_peer >= 3 else 'missed'}); "
            f"≥ 70 % of the bare loop — {versus_bare:.0%} "
            f"({'met' if versus_bare >= 0.7 else 'missed'})."
        )
    table.notes.append(
        "CPU-bound capacity = 2 cores ÷ (worker + Redis CPU per job): the rate the two cores "
        "would sustain with nothing else running; it depends on each system's own CPU time, "
        "not on what else the shared machine did meanwhile."
    )
    table.notes.append(
        "Drain rate is measured between 10 % and 90 % of the jobs done (start-up excluded). "
        "Every system's progress is seen the same way, by counting the results stored; no "
        "system pays an extra command for it."
    )
    table.notes.append(
        "Enqueue: imgstream one `JobQueue.enqueue` (script: HSET + XADD) per job, awaited in "
        "turn; bare loop pipelined XADD, 100 per round trip; peers their own client, one call "
        "per job."
    )
    if missing:
        table.notes.append(f"Not measured (environment failed to install): {', '.join(missing)}.")
    return table


def _capacity(drain: Drain) -> float:
    return PROCESSES / (drain.worker_cpu_ms / 1000 + drain.redis_cpu_us / 1e6)


def http_table(http: list[dict[str, float]]) -> Table:
    table = Table(
        key="s3-http",
        title=(
            f"Scenario 3: imgstream end to end over HTTP, tiny jobs, {HTTP_CONNECTIONS} "
            "concurrent clients, 2 worker processes"
        ),
        columns=[
            "jobs",
            "uploads accepted/s",
            "jobs done/s (median, range)",
            "target ≥ 1,000/s",
            "CPU ms/job: api + workers + redis + client",
        ],
    )
    if http:
        rate = Summary.of([run["rate"] for run in http])
        table.add(
            int(http[0]["jobs"]),
            Summary.of([run["upload_rate"] for run in http]).show(),
            rate.show(),
            "met" if rate.median >= 1000 else "missed",
            " + ".join(
                f"{Summary.of([run[f'cpu_{part}_ms'] for run in http]).median:.2f}"
                for part in ("api", "workers", "redis", "client")
            ),
        )
    table.data = {"runs": http}
    return table
