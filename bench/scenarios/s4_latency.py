"""Latency: one tiny job at a time, upload → ``done`` seen by the client; idle and under load.

The client uploads a 64×64 PNG (grayscale), then follows the job two ways at once, as a
client would: polling ``GET /api/jobs/ID`` every 2 ms on its connection, and reading the
job's event stream ``GET /api/jobs/ID/events`` (Server-Sent Events) on a second one, which
ends once the final state is sent. Under load, a background generator uploads at half the
throughput measured just before, with its own connections. Any answer other than the
expected one stops the scenario.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

import redis

import images
from context import Context
from httpload import Connection, expect, multipart
from measure import Summary, percentile
from report import Table
from service import Imgstream, upload_all, wait_drained

POLL_SECONDS = 0.002
TARGET_P50_MS, TARGET_P99_MS = 10, 30


@dataclass
class Probe:
    polled: list[float] = field(default_factory=list)
    announced: list[float] = field(default_factory=list)
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Per job, seconds: upload until enqueued, until a worker started, until finished, seen."""


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def phases(started: float, seen: float, job: dict[str, str]) -> tuple[float, float, float, float]:
    """Where the time went, from the job's own timestamps (millisecond resolution)."""
    created, begun, finished = (
        _epoch(job[key]) for key in ("created_at", "started_at", "finished_at")
    )
    return created - started, begun - created, finished - begun, seen - finished


async def probe(service: Imgstream, data: bytes, count: int, load_rate: float) -> Probe:
    body, content_type = multipart({"operation": "grayscale"}, "tiny.png", data)
    stop = asyncio.Event()
    refused: list[str] = []

    async def background() -> None:
        if load_rate <= 0:
            return
        connections = [Connection("127.0.0.1", service.port) for _ in range(8)]
        free: asyncio.Queue[Connection] = asyncio.Queue()
        for connection in connections:
            free.put_nowait(connection)

        async def one() -> None:
            connection = await free.get()
            try:
                answer = await connection.request("POST", "/api/jobs", body, content_type)
                if answer.status != 202:
                    refused.append(f"{answer.status} {answer.body[:200]!r}")
            finally:
                free.put_nowait(connection)

        tasks: set[asyncio.Task[None]] = set()
        next_at = time.perf_counter()
        while not stop.is_set():
            next_at += 1 / load_rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        for connection in connections:
            await connection.close()

    async def follow(connection: Connection, job_id: str) -> float:
        """The time the job's event stream ended, having sent its final state."""
        answer = await connection.request("GET", f"/api/jobs/{job_id}/events")
        ended = time.perf_counter()
        expect(answer, 200, "the event stream")
        if b"event: status" not in answer.body or b'"done"' not in answer.body:
            raise RuntimeError(f"the event stream ended without done: {answer.body[-300:]!r}")
        return ended

    loader = asyncio.create_task(background())
    result = Probe()
    connection = Connection("127.0.0.1", service.port)
    events = Connection("127.0.0.1", service.port)
    try:
        await asyncio.sleep(0.5 if load_rate else 0.05)  # let the load reach its pace
        for _ in range(count):
            started, wall_started = time.perf_counter(), time.time()
            accepted = await connection.request("POST", "/api/jobs", body, content_type)
            job_id = expect(accepted, 202, "the upload").json()["id"]
            followed = asyncio.create_task(follow(events, job_id))
            while True:
                answer = await connection.request("GET", f"/api/jobs/{job_id}")
                status = expect(answer, 200, "the status").json()
                if status["status"] in ("done", "failed"):
                    break
                await asyncio.sleep(POLL_SECONDS)
            if status["status"] != "done":
                raise RuntimeError(f"job {job_id} failed: {status.get('error')}")
            result.polled.append(time.perf_counter() - started)
            result.phases.append(phases(wall_started, time.time(), status))
            result.announced.append(await asyncio.wait_for(followed, 30) - started)
            await asyncio.sleep(0.005)  # idle between jobs: one job at a time, not back to back
    finally:
        stop.set()
        await loader
        await connection.close()
        await events.close()
    if refused:
        raise RuntimeError(f"{len(refused)} background uploads refused, first: {refused[0]}")
    return result


def throughput(service: Imgstream, data: bytes, count: int) -> float:
    client = redis.Redis.from_url(service.redis_url)
    try:
        started = time.monotonic()
        asyncio.run(upload_all(service.port, data, {"operation": "grayscale"}, count, 16))
        return count / (wait_drained(client, service.stream) - started)
    finally:
        client.close()


def run(ctx: Context) -> list[Table]:
    per_round = ctx.count(120, 50)
    data = images.tiny_png().read_bytes()
    results: dict[str, list[Probe]] = {"idle": [], "loaded": []}
    rates: list[float] = []
    with ctx.redis("s4") as server:
        service = Imgstream(server.url, ctx.directory("s4-data"), ctx.scratch / "s4.log")
        try:
            service.start_api()
            service.start_workers(2)
            for _ in range(ctx.rounds):
                results["idle"].append(asyncio.run(probe(service, data, per_round, 0)))
                rates.append(throughput(service, data, ctx.count(200, 150)))
                loaded = asyncio.run(probe(service, data, per_round, rates[-1] / 2))
                results["loaded"].append(loaded)
        finally:
            service.stop()

    table = Table(
        key="s4",
        title=(
            f"Scenario 4: latency of one 64×64 job, upload → done, ms "
            f"({per_round} sequential jobs × {ctx.rounds} rounds)"
        ),
        columns=["condition", "seen by", "p50", "p99", "max", "p50 per round (median, range)"],
    )
    half = f"at ~½ throughput ({Summary.of(rates).median / 2:,.0f} jobs/s)"
    seen = (("client polling every 2 ms", "polled"), ("event stream (/events)", "announced"))
    for condition, probes in results.items():
        for seen_by, attribute in seen:
            pooled = [1000 * value for p in probes for value in getattr(p, attribute)]
            per = Summary.of([1000 * percentile(getattr(p, attribute), 50) for p in probes])
            table.add(
                condition if condition == "idle" else half,
                seen_by,
                f"{percentile(pooled, 50):.1f}",
                f"{percentile(pooled, 99):.1f}",
                f"{max(pooled):.1f}",
                per.show(1),
            )
    for condition, probes in results.items():
        split = [
            1000 * percentile([p.phases[i][part] for p in probes for i in range(len(p.phases))], 50)
            for part in range(4)
        ]
        table.notes.append(
            f"{condition}: median split (job timestamps, 1 ms resolution): upload handled and "
            f"enqueued {split[0]:.1f} ms, picked up by a worker {split[1]:.1f}, processed and "
            f"recorded {split[2]:.1f}, seen by the client {split[3]:.1f}."
        )
    idle = [1000 * value for p in results["idle"] for value in p.polled]
    p50, p99 = percentile(idle, 50), percentile(idle, 99)
    table.notes.append(
        f"Targets at idle (client-visible): p50 ≤ {TARGET_P50_MS} ms — {p50:.1f} "
        f"({'met' if p50 <= TARGET_P50_MS else 'missed'}); p99 ≤ {TARGET_P99_MS} ms — "
        f"{p99:.1f} ({'met' if p99 <= TARGET_P99_MS else 'missed'})."
    )
    table.notes.append(
        f"Throughput measured before each loaded probe: {Summary.of(rates).show()} jobs/s."
    )
    table.data = {
        condition: [{"polled": p.polled, "announced": p.announced} for p in probes]
        for condition, probes in results.items()
    }
    table.data["throughput"] = rates
    return [table]
