"""``make soak``: a long run of mixed, bounded load against the real service (issue 11).

For ``--seconds`` (default 600): clients submit jobs at a bounded rate and follow each one
over its event stream (some poll instead); a few hostile clients trickle headers and bodies;
one worker process is SIGKILLed every ``--kill-every`` seconds (the supervisor replaces it).
Every ``--sample-every`` seconds the RSS of every process, Redis's memory and the data
directory's size are sampled.

It passes when: no answer was a 5xx; every accepted job reached ``done``; the API's and the
supervisor's RSS in the last window stay within 10 % of the first window's (workers: the
largest worker's); disk and Redis memory stay bounded by retention (``IMGSTREAM_RESULT_TTL``
60 s here). The figures are printed as Markdown and written to ``bench/results/soak.md``;
docs/reliability.md quotes the latest run. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from imgstream.redis_server import RedisServer

from images import photo
from measure import children, memory_kib
from service import Imgstream

BENCH = Path(__file__).resolve().parent
OPERATIONS = (
    '[{"op":"resize","width":320}]',
    '[{"op":"grayscale"}]',
    '[{"op":"blur","sigma":2}]',
    '[{"op":"resize","width":200},{"op":"grayscale"}]',
)
TOLERANCE = 0.10


@dataclass
class Tally:
    accepted: int = 0
    done: int = 0
    failed: int = 0
    refused_4xx: int = 0
    errors_5xx: int = 0
    transport_errors: int = 0
    slow_clients_refused: int = 0
    kills: int = 0
    pending: set[str] = field(default_factory=set)
    samples: list[dict[str, float]] = field(default_factory=list)


def jpeg(width: int, height: int, seed: int) -> bytes:
    data: bytes = photo(width, height, seed).jpegsave_buffer(Q=85)
    return data


async def client_loop(url: str, tally: Tally, until: float, rate: float, follow: bool) -> None:
    images = [jpeg(640, 480, seed) for seed in range(4)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while time.monotonic() < until:
            began = time.monotonic()
            try:
                answer = await http.post(
                    "/api/jobs",
                    files={"image": ("p.jpg", random.choice(images))},
                    data={"operations": random.choice(OPERATIONS)},
                )
            except httpx.HTTPError:
                tally.transport_errors += 1
                continue
            if answer.status_code >= 500:
                tally.errors_5xx += 1
            elif answer.status_code == 202:
                job_id = answer.json()["id"]
                tally.accepted += 1
                tally.pending.add(job_id)
                if follow:
                    await follow_events(http, job_id, tally)
            else:
                tally.refused_4xx += 1
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - began)))


async def follow_events(http: httpx.AsyncClient, job_id: str, tally: Tally) -> None:
    try:
        async with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
            if response.status_code >= 500:
                tally.errors_5xx += 1
                return
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    status = json.loads(line.removeprefix("data:"))["status"]
                    record(tally, job_id, status)
    except httpx.HTTPError:
        tally.transport_errors += 1


def record(tally: Tally, job_id: str, status: str) -> None:
    if job_id in tally.pending and status in ("done", "failed"):
        tally.pending.discard(job_id)
        if status == "done":
            tally.done += 1
        else:
            tally.failed += 1


async def slow_client(port: int, tally: Tally, until: float, body: bool) -> None:
    """Trickles a request a byte at a time; the server must cut it off (408) every time."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if body:
                writer.write(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            answered = asyncio.create_task(reader.read(4096))
            for byte in (b"x" * 10_000) if body else head:
                if answered.done() or time.monotonic() > until:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
            answer = await asyncio.wait_for(answered, 30)
            writer.close()
        except (OSError, TimeoutError):
            continue
        if answer.startswith(b"HTTP/1.1 408"):
            tally.slow_clients_refused += 1


async def poll_pending(url: str, tally: Tally, until: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        drained_by = until + 120  # then whatever is still pending counts as lost
        while time.monotonic() < until or (tally.pending and time.monotonic() < drained_by):
            for job_id in list(tally.pending):
                try:
                    answer = await http.get(f"/api/jobs/{job_id}")
                except httpx.HTTPError:
                    tally.transport_errors += 1
                    continue
                if answer.status_code >= 500:
                    tally.errors_5xx += 1
                elif answer.status_code == 200:
                    record(tally, job_id, answer.json()["status"])
            await asyncio.sleep(2)


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = []
    for pid in children(supervisor):
        try:
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def directory_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file() and "redis" not in path.parts:
                total += path.stat().st_size
        except OSError:
            continue
    return total


async def sampler(service: Imgstream, control: redis.Redis, tally: Tally, until: float,
                  every: float, kill_every: float) -> None:  # fmt: skip
    assert service.api is not None and service.workers is not None
    started = time.monotonic()
    next_kill = started + kill_every
    while time.monotonic() < until:
        workers = worker_pids(service.workers.pid)
        tally.samples.append(
            {
                "t": time.monotonic() - started,
                "api_mib": memory_kib(service.api.pid)[1] / 1024,
                "supervisor_mib": memory_kib(service.workers.pid)[1] / 1024,
                "worker_max_mib": max((memory_kib(pid)[1] for pid in workers), default=0) / 1024,
                "redis_mib": int(control.info("memory")["used_memory"]) / 2**20,
                "disk_mib": directory_bytes(service.data_dir) / 2**20,
            }
        )
        if time.monotonic() >= next_kill and workers:
            os.kill(random.choice(workers), signal.SIGKILL)
            tally.kills += 1
            next_kill += kill_every
        await asyncio.sleep(every)


def window_mean(samples: list[dict[str, float]], key: str, first: bool, span: float) -> float:
    end = samples[-1]["t"]
    chosen = [s[key] for s in samples if (s["t"] <= span if first else s["t"] >= end - span)]
    return statistics.fmean(chosen)


def report(tally: Tally, seconds: float, span: float) -> tuple[str, bool]:
    rows = []
    ok = tally.errors_5xx == 0 and not tally.pending and tally.failed == 0 and tally.accepted > 0
    for key, label in (("api_mib", "API RSS"), ("supervisor_mib", "supervisor RSS"),
                       ("worker_max_mib", "largest worker RSS")):  # fmt: skip
        first = window_mean(tally.samples, key, True, span)
        last = window_mean(tally.samples, key, False, span)
        change = (last - first) / first if first else 0.0
        flat = abs(change) <= TOLERANCE or last <= first
        ok = ok and flat
        rows.append(f"| {label} | {first:.1f} MiB | {last:.1f} MiB | {change:+.1%} | "
                    f"{'ok' if flat else 'GREW'} |")  # fmt: skip
    end = tally.samples[-1]["t"]
    for key, label in (("redis_mib", "Redis used_memory"), ("disk_mib", "data directory")):
        # Retention (60 s) has reached a steady state by half-time: the last window may not
        # hold more than a quarter above the window around half-time.
        middle = [s[key] for s in tally.samples if abs(s["t"] - end / 2) <= span / 2]
        last = window_mean(tally.samples, key, False, span)
        bounded = last <= 1.25 * statistics.fmean(middle) + 1.0
        ok = ok and bounded
        rows.append(f"| {label} | {statistics.fmean(middle):.1f} MiB (half-time) | {last:.1f} MiB "
                    f"| max {max(s[key] for s in tally.samples):.1f} MiB | "
                    f"{'bounded' if bounded else 'GREW'} |")  # fmt: skip
    lines = [
        f"## Soak: {seconds:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"- jobs accepted {tally.accepted}, done {tally.done}, failed {tally.failed}, "
        f"lost {len(tally.pending)}; 4xx refusals {tally.refused_4xx}; "
        f"**5xx {tally.errors_5xx}**; transport errors {tally.transport_errors}",
        f"- worker processes SIGKILLed: {tally.kills}; slow clients cut off with 408: "
        f"{tally.slow_clients_refused}",
        "",
        f"| figure | first {span:.0f} s | last {span:.0f} s | change | verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Result: {'PASS' if ok else 'FAIL'}",
    ]
    return "\n".join(lines), ok


def soak(args: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="imgstream-soak-"))
    with RedisServer(scratch / "redis") as server:
        service = Imgstream(
            server.url,
            scratch / "data",
            scratch / "service.log",
            settings={
                "IMGSTREAM_RESULT_TTL": "60",
                "IMGSTREAM_JANITOR_INTERVAL": "10",
                "IMGSTREAM_VISIBILITY_TIMEOUT": "5",
                "IMGSTREAM_RATE_LIMIT_PER_SECOND": "0",
                "IMGSTREAM_HTTP_HEADER_TIMEOUT": "5",
                "IMGSTREAM_HTTP_BODY_WINDOW": "5",
            },
        )
        service.start_api()
        service.start_workers(2)
        url = f"http://127.0.0.1:{service.port}"
        control = redis.Redis.from_url(server.url)
        tally = Tally()
        until = time.monotonic() + args.seconds

        async def load() -> None:
            await asyncio.gather(
                *(client_loop(url, tally, until, args.rate / 4, follow=n < 3) for n in range(4)),
                *(slow_client(service.port, tally, until, body=n == 0) for n in range(3)),
                poll_pending(url, tally, until),
                sampler(service, control, tally, until, args.sample_every, args.kill_every),
            )

        try:
            asyncio.run(load())
        finally:
            control.close()
            service.stop()
    text, ok = report(tally, args.seconds, min(60.0, args.seconds / 4))
    print(text)
    (BENCH / "results" / "soak.md").write_text(text + "\n")
    print(f"(service log: {scratch / 'service.log'})", file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=6.0, help="jobs per second, all clients")
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    socket.setdefaulttimeout(60)
    return soak(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
