"""The imgproxy scenario, side by side with thumbor: 7360×4912 JPEG → fit 500×500; 12 MP blur.

Both systems move the source bytes over HTTP: imgstream's client uploads them (then polls
the status, backing off from 10 ms, and fetches the result); thumbor 7 (2 processes, no
storage, no result cache) fetches them with its HTTP loader from a local static server.
4 concurrent clients; the two systems alternate within each round. Memory is the peak of
the summed PSS (and RSS) of every server process, Redis included; the static server that
only feeds thumbor is left out.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from imgstream.redis_server import free_port

import images
from context import Context, env
from httpload import Connection, expect, multipart
from measure import MemorySampler, Summary, percentile, tree_cpu
from report import Table
from service import Imgstream

CLIENTS = 4
CASES = {
    "resize 7360×4912 → fit 500×500": (
        "imgproxy",
        [{"op": "resize", "width": 500, "height": 500}],
        "fit-in/500x500",
    ),
    "blur sigma 2, 12 MP (4240×2832)": (
        "12mp",
        [{"op": "blur", "sigma": 2.0}],
        "filters:blur(6,2)",
    ),
}
THUMBOR_CONF = """
LOADER = 'thumbor.loaders.http_loader'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
QUALITY = 85
HTTP_LOADER_FORWARD_USER_AGENT = False
# Pillow's blur holds the IO loop for seconds: with the default 5 s / 20 s timeouts, fetches
# queued behind it end in 504. Longer timeouts change nothing else.
HTTP_LOADER_CONNECT_TIMEOUT = 120
HTTP_LOADER_REQUEST_TIMEOUT = 300
"""


async def closed_loop(
    count: int, one: Callable[[Connection], Awaitable[int]], port: int
) -> dict[str, Any]:
    """``CLIENTS`` connections, each doing requests back to back, ``count`` in all."""
    latencies: list[float] = []
    sizes: list[int] = []
    remaining = iter(range(count))

    async def client() -> None:
        connection = Connection("127.0.0.1", port)
        try:
            for _ in remaining:
                began = time.perf_counter()
                sizes.append(await one(connection))
                latencies.append(time.perf_counter() - began)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    return {
        "rps": count / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50),
        "latencies_ms": [1000 * latency for latency in latencies],
        "bytes": sum(sizes) / len(sizes),
    }


def imgstream_request(
    data: bytes, steps: list[dict[str, object]]
) -> Callable[[Connection], Awaitable[int]]:
    body, content_type = multipart({"operations": json.dumps(steps)}, "source.jpg", data)

    async def one(connection: Connection) -> int:
        accepted = await connection.request("POST", "/api/jobs", body, content_type)
        job_id = expect(accepted, 202, "imgstream's upload").json()["id"]
        pause = 0.010
        while True:
            await asyncio.sleep(pause)
            answer = await connection.request("GET", f"/api/jobs/{job_id}")
            status = expect(answer, 200, "imgstream's status").json()
            if status["status"] == "done":
                break
            if status["status"] == "failed":
                raise RuntimeError(f"imgstream job failed: {status['error']}")
            pause = min(pause * 1.5, 0.1)
        result = await connection.request("GET", f"/api/jobs/{job_id}/result")
        return len(expect(result, 200, "imgstream's result").body)

    return one


def thumbor_request(path: str) -> Callable[[Connection], Awaitable[int]]:
    async def one(connection: Connection) -> int:
        response = await connection.request("GET", path)
        return len(expect(response, 200, f"thumbor, for {path},").body)

    return one


def _start(command: list[str], log: Path, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            command, env=env(**extra), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def _wait_http(port: int, path: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        connection = Connection("127.0.0.1", port)
        try:
            if (await connection.request("GET", path)).status < 500:
                return
        except OSError:
            pass
        finally:
            await connection.close()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port}")


def measure_system(
    parts: dict[str, list[int]], count: int, one: Callable[[Connection], Awaitable[int]], port: int
) -> dict[str, Any]:
    """``count`` requests by ``CLIENTS`` clients; CPU (per part) and peak memory of all parts."""
    roots = [pid for pids in parts.values() for pid in pids]
    cpu_before = {name: tree_cpu(pids) for name, pids in parts.items()}
    client_before = time.process_time()
    with MemorySampler(lambda: roots) as memory:
        result = asyncio.run(closed_loop(count, one, port))
    for name, pids in parts.items():
        result[f"cpu_{name}_s"] = tree_cpu(pids) - cpu_before[name]
    result["cpu_s"] = sum(result[f"cpu_{name}_s"] for name in parts)
    result["cpu_client_s"] = time.process_time() - client_before
    result["pss_mib"] = memory.peak_pss_kib / 1024
    result["rss_mib"] = memory.peak_rss_kib / 1024
    return result


def run(ctx: Context) -> list[Table]:
    python = ctx.peer("thumbor")
    if python is None:
        raise RuntimeError("thumbor could not be installed; see bench.log")
    counts = {"imgproxy": ctx.count(68, 12), "12mp": ctx.count(16, 4)}
    sources = {"imgproxy": images.imgproxy_jpeg(), "12mp": images.mp12_jpeg()}
    static_dir = ctx.directory("s2-static")
    for name, source in sources.items():
        os.link(source, static_dir / f"{name}.jpg")
    conf = ctx.scratch / "thumbor.conf"
    conf.write_text(THUMBOR_CONF)
    log = ctx.scratch / "s2.log"
    static_port, thumbor_port = free_port(), free_port()
    static = _start([sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1",
                     "--directory", str(static_dir)], log)  # fmt: skip
    thumbor = _start([str(python.parent / "thumbor"), "-p", str(thumbor_port), "-i", "127.0.0.1",
                      "-c", str(conf), "--processes", "2", "-l", "error"], log)  # fmt: skip
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        with ctx.redis("s2") as server:
            assert server.process is not None
            redis_pid = server.process.pid
            service = Imgstream(server.url, ctx.directory("s2-data"), log)
            try:
                service.start_api()
                service.start_workers(2)
                asyncio.run(_wait_http(static_port, "/"))
                asyncio.run(_wait_http(thumbor_port, "/healthcheck"))
                for round_number in range(ctx.rounds):
                    for label, (name, steps, thumbor_op) in CASES.items():
                        path = f"/unsafe/{thumbor_op}/127.0.0.1:{static_port}/{name}.jpg"
                        order = ["imgstream", "thumbor"][:: 1 if round_number % 2 == 0 else -1]
                        for system in order:
                            if system == "imgstream":
                                roots = {
                                    "api": service.api_roots(),
                                    "workers": service.worker_roots(),
                                    "redis": [redis_pid],
                                }
                                one = imgstream_request(sources[name].read_bytes(), steps)
                                port = service.port
                            else:
                                roots = {"thumbor": [thumbor.pid]}
                                one, port = thumbor_request(path), thumbor_port
                            result = measure_system(roots, counts[name], one, port)
                            results.setdefault((label, system), []).append(result)
                        _clear(service.data_dir)
            finally:
                service.stop()
    finally:
        _stop(thumbor)
        _stop(static)
    return [table(results, counts, ctx.rounds)]


def _clear(data_dir: Path) -> None:
    for folder in ("originals", "results"):
        for path in (data_dir / folder).iterdir():
            path.unlink()


def tail(latencies_ms: list[float]) -> str:
    """p99 where there are enough requests for one (100), else the maximum, saying so."""
    if len(latencies_ms) >= 100:
        return f"p99 {percentile(latencies_ms, 99):,.0f} (n={len(latencies_ms)})"
    return f"max {max(latencies_ms):,.0f} (n={len(latencies_ms)})"


def table(
    results: dict[tuple[str, str], list[dict[str, Any]]], counts: dict[str, int], rounds: int
) -> Table:
    out = Table(
        key="s2",
        title=(
            f"Scenario 2: imgstream vs thumbor 7, {CLIENTS} concurrent clients "
            "(median of rounds, range)"
        ),
        columns=["case", "system", "req/s", "vs thumbor", "p50 ms", "tail ms (all rounds)",
                 "peak PSS MiB", "peak RSS MiB", "CPU ms/req", "output bytes"],
    )  # fmt: skip
    for label, (name, _, _) in CASES.items():
        thumbor_rps = Summary.of([r["rps"] for r in results[(label, "thumbor")]])
        for system in ("imgstream", "thumbor"):
            runs = results[(label, system)]
            rps = Summary.of([r["rps"] for r in runs])
            out.add(
                label,
                system,
                rps.show(1),
                f"{rps.median / thumbor_rps.median:.2f}×",
                Summary.of([r["p50_ms"] for r in runs]).show(),
                tail([latency for r in runs for latency in r["latencies_ms"]]),
                Summary.of([r["pss_mib"] for r in runs]).show(),
                Summary.of([r["rss_mib"] for r in runs]).show(),
                Summary.of([1000 * r["cpu_s"] / counts[name] for r in runs]).show(),
                f"{Summary.of([r['bytes'] for r in runs]).median:,.0f}",
            )
    out.notes.append(
        f"Requests per system and case: {counts['imgproxy'] * rounds} (resize), "
        f"{counts['12mp'] * rounds} (blur), over {rounds} rounds. Targets: resize ≥ 1.2× "
        "thumbor's req/s with total PSS ≤ thumbor's; blur ≥ 2× its req/s with ≤ ½ its PSS."
    )
    out.notes.append(
        "imgstream's memory includes its API, worker supervisor, 2 workers and Redis; "
        "thumbor's its 3 processes. thumbor uses Pillow with `draft` (JPEG shrink-on-load)."
    )
    for label, (name, _, _) in CASES.items():
        runs = results[(label, "imgstream")]
        split = [
            Summary.of([1000 * r[f"cpu_{part}_s"] / counts[name] for r in runs]).median
            for part in ("api", "workers", "redis", "client")
        ]
        out.notes.append(
            f"{label}: imgstream's CPU ms per request = API {split[0]:.0f} + workers "
            f"{split[1]:.0f} + Redis {split[2]:.1f}; its client (upload, polls, fetch) "
            f"{split[3]:.0f} more, not counted."
        )
    out.data = {f"{label}|{system}": runs for (label, system), runs in results.items()}
    return out
