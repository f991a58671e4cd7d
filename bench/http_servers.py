"""HTTP servers for the API, measured side by side: imgstream's own vs plain uvicorn vs granian.

The same ASGI app (``imgstream.api.create_app``, a private Redis, a data directory, no rate
limits) is served by:

- ``imgstream``: ``imgstream api`` as it runs in production: uvicorn with uvloop and
  imgstream's guarded httptools protocol (``imgstream.http_server``: header deadline and
  size, body pace, connection cap, JSON refusals);
- ``uvicorn-httptools``: plain uvicorn, uvloop and httptools (what the guard costs);
- ``uvicorn-h11``: plain uvicorn, uvloop and h11 (the pure-Python parser imgstream's guard
  was first built on);
- ``granian``: granian 2 (Rust, HTTP/1 only, one worker, uvloop), if it is installed
  (``pip install -e '.[bench]'``).

For each, in an order rotating from round to round: requests per second and the server's
CPU per request (``/proc/PID/stat`` of its whole process tree) for ``GET /healthz``,
``GET /api/jobs/{id}`` and ``POST /api/jobs`` with a 64×64 PNG and a 6 MB JPEG, over
keep-alive connections from a bare asyncio client (``httpload``); whether a job's event
stream (SSE) pushes the states a real worker produces and ends with ``done``; and what
happens to an open event stream when the server is sent SIGTERM (graceful shutdown): when
and how it ends, and how the process exits. Then, once per server, with the limits made
short, what a hostile client meets: over-large headers, an over-long URL, too many header
fields, a head or a body trickled in, more connections than the cap.

Standalone: ``.venv/bin/python bench/http_servers.py [--quick] [--rounds N]``; also
scenario 8 of ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import images
from context import RUNNERS, Context
from httpload import Connection, expect, multipart
from measure import Summary, memory_kib, tree, tree_cpu
from report import Table
from service import Imgstream

VARIANTS = (
    "imgstream",
    "uvicorn-httptools",
    "uvicorn-h11",
    "granian",
)
CONNECTIONS = 8
SHUTDOWN_GRACE = 3
"""Seconds of graceful shutdown given to every server (``IMGSTREAM_SHUTDOWN_GRACE``)."""

# Short limits for the hostile-client checks, so that each check takes seconds.
LIMITS = {
    "IMGSTREAM_HTTP_HEADER_TIMEOUT": "2",
    "IMGSTREAM_HTTP_BODY_WINDOW": "2",
    "IMGSTREAM_HTTP_MIN_BODY_RATE": "1024",
    "IMGSTREAM_HTTP_MAX_CONNECTIONS": "16",
    "IMGSTREAM_HTTP_KEEPALIVE_TIMEOUT": "5",
}
PROBE_SECONDS = 8.0
"""How long a hostile-client check waits for the server to act before calling it "open"."""


def granian_installed() -> bool:
    return importlib.util.find_spec("granian") is not None


def command(variant: str, port: int, settings: dict[str, str]) -> list[str]:
    """How ``variant`` is started; every one reads the rest of its settings from the env."""
    python = sys.executable
    if variant == "imgstream":
        return [python, "-m", "imgstream", "api"]
    if variant.startswith("uvicorn-"):
        return [python, str(RUNNERS / "http_app.py"), variant.removeprefix("uvicorn-")]
    if variant == "granian":
        header_timeout = float(settings.get("IMGSTREAM_HTTP_HEADER_TIMEOUT", "10"))
        return [
            *(python, "-m", "granian", "--interface", "asgi", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--loop", "uvloop", "--http", "1", "--no-ws", "--no-access-log"),
            *("--log-level", "warning", "--workers-kill-timeout", str(SHUTDOWN_GRACE)),
            # its one header limit, set to imgstream's (it also has no body pace nor cap)
            *("--http1-header-read-timeout", str(int(header_timeout * 1000))),
            "runners.http_app:create",
        ]
    raise ValueError(variant)


@dataclass
class Served(Imgstream):
    """imgstream's API under one of the servers, against a private Redis."""

    variant: str = "imgstream"

    def start_api(self) -> None:
        self.settings = {"IMGSTREAM_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE), **self.settings}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.api = subprocess.Popen(
                command(self.variant, self.port, self.settings),
                env=self.environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        asyncio.run(self._wait_healthy())


# Load.


@dataclass
class Load:
    requests: int
    wall: float
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.wall

    @property
    def cpu_ms(self) -> float:
        return self.server_cpu / self.requests * 1000


async def _hammer(
    port: int, method: str, path: str, body: bytes, content_type: str, count: int, status: int
) -> None:
    remaining = iter(range(count))

    async def client() -> None:
        connection = Connection("127.0.0.1", port)
        try:
            for _ in remaining:
                answer = await connection.request(method, path, body, content_type)
                expect(answer, status, f"{method} {path}")
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))


def load(served: Served, method: str, path: str, count: int, upload: bytes = b"") -> Load:
    """``count`` requests over ``CONNECTIONS`` keep-alive connections, with the server's CPU."""
    body, content_type = (b"", "")
    if upload:
        name = "upload.png" if upload.startswith(b"\x89PNG") else "upload.jpg"
        body, content_type = multipart({"operation": "grayscale"}, name, upload)
    status = 202 if method == "POST" else 200
    roots = served.api_roots()
    cpu, client = tree_cpu(roots), time.process_time()
    began = time.perf_counter()
    asyncio.run(_hammer(served.port, method, path, body, content_type, count, status))
    wall = time.perf_counter() - began
    return Load(count, wall, tree_cpu(roots) - cpu, time.process_time() - client)


# Event streams.


async def _open_stream(
    port: int, job_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the event stream answered {head[:200]!r}")
    seen = bytearray()
    while b"event: status" not in seen:
        seen += await asyncio.wait_for(reader.read(65536), 10)
    return reader, writer, seen


async def _read_to_end(
    reader: asyncio.StreamReader, seen: bytearray, within: float
) -> tuple[str, float]:
    """Read until the stream ends; how it ended ('clean', 'cut', 'reset', 'open') and when."""
    began = time.perf_counter()
    try:
        while not seen.endswith(b"0\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(65536), within)
            if not chunk:
                return "cut", time.perf_counter() - began
            seen += chunk
    except TimeoutError:
        return "open", time.perf_counter() - began
    except ConnectionResetError:
        return "reset", time.perf_counter() - began
    return "clean", time.perf_counter() - began


async def _sse_live(served: Served, job_id: str) -> str:
    """The stream of a queued job, then a worker started: does it push ``done`` and end?"""
    reader, writer, seen = await _open_stream(served.port, job_id)
    try:
        await asyncio.to_thread(served.start_workers, 1)
        how, _ = await _read_to_end(reader, seen, 30)
    finally:
        writer.close()
    done = b'"status":"done"' in seen.replace(b" ", b"")
    return f"{how}, {'done' if done else 'no done'}"


@dataclass
class Shutdown:
    stream: str
    stream_after: float
    exit_code: int | None
    exit_after: float


async def _sse_shutdown(served: Served, job_id: str) -> Shutdown:
    """An open stream (its job queued, no worker), then SIGTERM: when and how does it end?"""
    assert served.api is not None
    process = served.api
    reader, writer, seen = await _open_stream(served.port, job_id)
    began = time.perf_counter()
    os.kill(process.pid, signal.SIGTERM)
    try:
        how, after = await _read_to_end(reader, seen, SHUTDOWN_GRACE + 10)
    finally:
        writer.close()
    exit_code: int | None = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        exit_code = await asyncio.to_thread(process.wait, SHUTDOWN_GRACE + 20)
    return Shutdown(how, after, exit_code, time.perf_counter() - began)


# Hostile clients.


async def _probe(port: int, sends: list[tuple[float, bytes]]) -> str:
    """Send ``sends`` (delay, bytes) on one connection and say what the server did: the
    first answer's status, whether it was the API's JSON, and when; or when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.perf_counter()
    received = bytearray()
    answered: list[float] = []
    ended = asyncio.Event()

    async def read() -> None:
        with contextlib.suppress(ConnectionResetError, OSError):
            while chunk := await reader.read(65536):
                answered.append(time.perf_counter() - began)
                received.extend(chunk)
        ended.set()

    async def send() -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError, OSError):
            for delay, data in sends:
                await asyncio.sleep(delay)
                if ended.is_set():
                    return
                writer.write(data)
                await writer.drain()

    reading, sending = asyncio.create_task(read()), asyncio.create_task(send())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ended.wait(), PROBE_SECONDS)
    after = time.perf_counter() - began
    sending.cancel()
    reading.cancel()
    writer.close()
    head = bytes(received.split(b"\r\n\r\n", 1)[0]).decode("latin-1").lower()
    if not head.startswith("http/"):
        if ended.is_set():
            return f"closed, no answer, at {after:.1f} s"
        return f"open at {PROBE_SECONDS:.0f} s, no answer"
    status = head.split(" ")[1]
    kind = "JSON" if "content-type: application/json" in head else "text"
    if status.startswith("2"):
        return f"served ({status})"
    return f"{status} {kind} at {answered[0]:.1f} s"


def _trickle(head: bytes, piece: bytes, every: float) -> list[tuple[float, bytes]]:
    return [(0.0, head)] + [(every, piece)] * int(PROBE_SECONDS / every + 2)


HOSTILE: dict[str, list[tuple[float, bytes]]] = {
    "headers of 200 KB": [
        (0.0, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    ],
    "headers of 1 MB": [
        (0.0, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    ],
    "URL of 100 KB": [(0.0, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")],
    "1,000 header fields": [
        (
            0.0,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % n for n in range(1000))
            + b"\r\n",
        )
    ],
    "nothing sent": [],
    "head never finished": [(0.0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")],
    "head trickled, a header every 0.5 s": _trickle(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n", 0.5
    ),
    "body trickled, 10 B every 0.5 s": _trickle(
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n',
        b"0123456789",
        0.5,
    ),
}


async def _over_the_cap(port: int, cap: int) -> str:
    """``cap`` + 4 idle connections, then a request on a new one: is it refused at once?"""
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap + 4)]
    try:
        outcome = await _probe(port, [(0.0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")])
    finally:
        for _, writer in held:
            writer.close()
    return outcome


async def _hostile(port: int) -> dict[str, str]:
    """Every check at once (each on its own connection, well under the cap), then the cap."""
    outcomes = await asyncio.gather(*(_probe(port, sends) for sends in HOSTILE.values()))
    found = dict(zip(HOSTILE, outcomes, strict=True))
    found["20 connections over a cap of 16"] = await _over_the_cap(
        port, int(LIMITS["IMGSTREAM_HTTP_MAX_CONNECTIONS"])
    )
    return found


# The scenario.


@dataclass
class Results:
    loads: dict[tuple[str, str], list[Load]] = field(default_factory=dict)
    live: dict[str, list[str]] = field(default_factory=dict)
    shutdowns: dict[str, list[Shutdown]] = field(default_factory=dict)
    pss_mib: dict[str, list[float]] = field(default_factory=dict)
    hostile: dict[str, dict[str, str]] = field(default_factory=dict)


ROUTES = (
    "GET /healthz",
    "GET /api/jobs/{id}",
    "POST /api/jobs (64×64 PNG)",
    "POST /api/jobs (6 MB JPEG)",
)


def _served(ctx: Context, redis_url: str, variant: str, name: str, **settings: str) -> Served:
    return Served(
        redis_url=redis_url,
        data_dir=ctx.directory(f"{name}-data"),
        log=ctx.scratch / f"{name}.log",
        settings=dict(settings),
        variant=variant,
    )


def one_round(ctx: Context, redis_url: str, variant: str, round_: int, results: Results) -> None:
    served = _served(ctx, redis_url, variant, f"http-{variant}-{round_}")
    tiny = images.tiny_png().read_bytes()
    uploads = {ROUTES[2]: tiny, ROUTES[3]: images.imgproxy_jpeg().read_bytes()}
    counts = {
        ROUTES[0]: ctx.count(4000, 800),
        ROUTES[1]: ctx.count(3000, 600),
        ROUTES[2]: ctx.count(600, 120),
        ROUTES[3]: ctx.count(40, 8),
    }
    try:
        served.start_api()

        async def post() -> str:
            body, content_type = multipart({"operation": "grayscale"}, "tiny.png", tiny)
            connection = Connection("127.0.0.1", served.port)
            try:
                answer = await connection.request("POST", "/api/jobs", body, content_type)
            finally:
                await connection.close()
            return str(expect(answer, 202, "the upload").json()["id"])

        job_id = asyncio.run(post())
        results.live.setdefault(variant, []).append(asyncio.run(_sse_live(served, job_id)))
        served.stop_workers()
        # warm: the first requests of each route pay for imports and first connections
        load(served, "GET", "/healthz", 200)
        load(served, "POST", "/api/jobs", 20, tiny)
        paths = {ROUTES[0]: "/healthz", ROUTES[1]: f"/api/jobs/{job_id}"}
        paths |= dict.fromkeys(uploads, "/api/jobs")
        for route, path in paths.items():
            upload = uploads.get(route, b"")
            method = "POST" if upload else "GET"
            measured = load(served, method, path, counts[route], upload)
            results.loads.setdefault((variant, route), []).append(measured)
        pss = sum(memory_kib(pid)[0] for pid in tree(served.api_roots())) / 1024
        results.pss_mib.setdefault(variant, []).append(pss)
        queued = asyncio.run(post())
        shutdown = asyncio.run(_sse_shutdown(served, queued))
        results.shutdowns.setdefault(variant, []).append(shutdown)
    finally:
        served.stop()


def hostile_checks(ctx: Context, redis_url: str, variant: str, results: Results) -> None:
    served = _served(ctx, redis_url, variant, f"http-{variant}-limits", **LIMITS)
    try:
        served.start_api()
        results.hostile[variant] = asyncio.run(_hostile(served.port))
    finally:
        served.stop()


def run(ctx: Context) -> list[Table]:
    variants = [v for v in VARIANTS if v != "granian" or granian_installed()]
    results = Results()
    with ctx.redis("http-servers") as redis_server:
        for round_ in range(ctx.rounds):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                one_round(ctx, redis_server.url, variant, round_, results)
        for variant in variants:
            hostile_checks(ctx, redis_server.url, variant, results)
    produced = tables(variants, results, ctx.rounds)
    if "granian" not in variants:
        produced[0].notes.append("granian is not installed: `pip install -e '.[bench]'`.")
    return produced


def tables(variants: list[str], results: Results, rounds: int) -> list[Table]:
    speed = Table(
        key="s8-http-servers",
        title="Scenario 8: HTTP servers for the API, req/s and server CPU per request",
        columns=["route", "server", "req/s", "server CPU ms/req", "req/s ÷ imgstream's",
                 "CPU ÷ imgstream's"],
    )  # fmt: skip
    for route in ROUTES:
        base = results.loads[("imgstream", route)]
        for variant in variants:
            loads = results.loads[(variant, route)]
            rate = Summary.of([load.rate for load in loads])
            cpu = Summary.of([load.cpu_ms for load in loads])
            # same-round ratios: each round's figure over imgstream's of the same round
            rate_ratio = Summary.of([a.rate / b.rate for a, b in zip(loads, base, strict=True)])
            cpu_ratio = Summary.of([a.cpu_ms / b.cpu_ms for a, b in zip(loads, base, strict=True)])
            speed.add(route, variant, rate.show(), cpu.show(2), rate_ratio.show(2),
                      cpu_ratio.show(2))  # fmt: skip
            speed.data.setdefault("loads", {}).setdefault(variant, {})[route] = {
                "rate": rate.as_json(),
                "server_cpu_ms": cpu.as_json(),
                "client_cpu_ms": [load.client_cpu / load.requests * 1000 for load in loads],
                "rate_ratio": rate_ratio.as_json(),
                "cpu_ratio": cpu_ratio.as_json(),
            }
    speed.notes.append(
        f"{rounds} rounds, the servers' order rotating; {CONNECTIONS} keep-alive connections "
        "from one bare asyncio client; server CPU is its whole process tree (granian: the "
        "main process and its worker). Ratios are per round, then the median and range."
    )
    behaviour = Table(
        key="s8-http-servers-sse",
        title="Scenario 8: event streams and graceful shutdown (SIGTERM), per round",
        columns=["server", "stream of a job a worker runs", "open stream on SIGTERM",
                 "ends after s", "process exit code", "exits after s", "PSS after load, MiB"],
    )  # fmt: skip
    for variant in variants:
        shutdowns = results.shutdowns[variant]
        behaviour.add(
            variant,
            "; ".join(results.live[variant]),
            "; ".join(s.stream for s in shutdowns),
            " / ".join(f"{s.stream_after:.1f}" for s in shutdowns),
            " / ".join(str(s.exit_code) for s in shutdowns),
            " / ".join(f"{s.exit_after:.1f}" for s in shutdowns),
            Summary.of(results.pss_mib[variant]).show(),
        )
    behaviour.notes.append(
        f"IMGSTREAM_SHUTDOWN_GRACE={SHUTDOWN_GRACE} for every server (granian: "
        f"--workers-kill-timeout {SHUTDOWN_GRACE}). 'clean': the chunked stream was ended "
        "properly; 'cut': the connection closed mid-stream; 'open': still open when the "
        "client gave up. PSS: the server's process tree after its loads (granian: main "
        "process and worker)."
    )
    behaviour.data["pss_mib"] = results.pss_mib
    behaviour.data["shutdowns"] = {v: [s.__dict__ for s in results.shutdowns[v]] for v in variants}
    hostile = Table(
        key="s8-http-servers-limits",
        title="Scenario 8: what a hostile client meets (status and when, after connecting)",
        columns=["client", *variants],
    )
    for check in results.hostile[variants[0]]:
        hostile.add(check, *(results.hostile[v][check] for v in variants))
    hostile.notes.append(
        "Limits made short for the check: "
        + ", ".join(f"{k}={v}" for k, v in LIMITS.items())
        + "; granian gets --http1-header-read-timeout of the same 2 s (its only such "
        "setting). 'open at N s': the server had done nothing when the client stopped."
    )
    hostile.data["hostile"] = results.hostile
    return [speed, behaviour, hostile]


def main(argv: list[str] | None = None) -> int:
    import report
    from context import make_scratch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args(argv)
    scratch = make_scratch()
    rounds = args.rounds or (2 if args.quick else 3)
    ctx = Context(
        quick=args.quick, rounds=rounds, scratch=scratch, log=report.RESULTS / "bench.log"
    )
    print(f"scratch: {scratch}", flush=True)
    info = report.machine()
    began = time.monotonic()
    try:
        produced = run(ctx)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    body = "\n".join(table.markdown() for table in produced)
    print(body, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {
        "machine": info,
        "options": {**vars(args), "seconds": round(time.monotonic() - began, 1)},
        "tables": [{"key": t.key, "rows": t.rows, "data": t.data} for t in produced],
    }
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    (report.RESULTS / f"http-servers-{stamp}.json").write_text(
        json.dumps(document, indent=2, default=str) + "\n"
    )
    header = (
        f"# HTTP servers for the API ({time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"{rounds} rounds{', quick' if args.quick else ''})\n\n"
        f"Commit: {info.get('commit', 'unknown')}.\nMachine: {report.describe(info)}.\n"
        f"Command: `python bench/http_servers.py {' '.join(argv or sys.argv[1:])}`.\n\n"
    )
    name = "http_servers-quick.md" if args.quick else "http_servers.md"
    (report.RESULTS / name).write_text(header + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
