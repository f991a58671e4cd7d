"""Run the real service (API and worker processes) as subprocesses for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from imgstream.redis_server import free_port

from images import encode, photo


def service_env(redis_url: str, data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_")}
    env.update(
        {
            "REDIS_URL": redis_url,
            "IMGSTREAM_DATA_DIR": str(data_dir),
            "IMGSTREAM_KEY_PREFIX": prefix,
            "IMGSTREAM_BLOCK_MS": "100",
            "IMGSTREAM_LOG_LEVEL": "WARNING",
            # Tests drive hundreds of requests from one address; rate-limit tests turn it on.
            "IMGSTREAM_RATE_LIMIT_PER_SECOND": "0",
            # These tests send the same few images again and again to exercise the workers;
            # the result cache would serve the repeats (tests/test_result_cache.py turns it on).
            "IMGSTREAM_RESULT_CACHE": "false",
            **extra,
        }
    )
    return env


def start(
    arguments: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "imgstream", *arguments],
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Return once ``url`` answers ``/healthz``; a hang guard, generous since importing the
    API alone has taken over 20 s on a loaded test machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


PNG = encode(photo(32, 24), "png")
"""A small real image for tests that need any upload."""


@dataclass
class Api:
    """An ``imgstream api`` process alone: jobs it accepts stay queued (no worker runs)."""

    url: str
    data_dir: Path
    prefix: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def upload(self, http: httpx.Client, **headers: str) -> httpx.Response:
        return http.post(
            f"{self.url}/api/jobs",
            files={"image": ("a.png", PNG)},
            data={"operation": "grayscale"},
            headers=headers,
        )


@contextmanager
def api_alone(redis_url: str, tmp_path: Path, **settings: str) -> Iterator[Api]:
    """An API process on a fresh prefix and data directory, stopped afterwards."""
    port, prefix = free_port(), f"api-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / f"data-{prefix}"
    data_dir.mkdir(parents=True)
    env = service_env(redis_url, data_dir, prefix, IMGSTREAM_PORT=str(port), **settings)
    log = tmp_path / f"{prefix}.log"
    process = start(["api"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield Api(url, data_dir, prefix, env, log, process)
    finally:
        stop(process)


SLOW_OPERATIONS = '[{"op":"blur","sigma":40},{"op":"blur","sigma":40}]'
"""Two wide blurs of a 2400x2400 photo: a job of a second or more, for tests that need one
in hand long enough to act on (they wait for ``processing``, never for a time)."""


@dataclass
class Service:
    """A running API and worker pool sharing one Redis and one data directory."""

    url: str
    data_dir: Path
    prefix: str
    env: dict[str, str]
    log: Path
    api: subprocess.Popen[bytes]
    workers: subprocess.Popen[bytes]
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @classmethod
    def launch(
        cls,
        redis_url: str,
        data_dir: Path,
        prefix: str,
        concurrency: int = 2,
        cwd: Path | None = None,
        **extra: str,
    ) -> Service:
        port = free_port()
        env = service_env(redis_url, data_dir, prefix, IMGSTREAM_PORT=str(port), **extra)
        log = data_dir.parent / f"service-{prefix}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        api = start(["api"], env, log, cwd)
        workers = start(["worker", "--concurrency", str(concurrency)], env, log, cwd)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, api, timeout=90)  # a hang guard: a loaded machine is slow
        except BaseException:
            for process in (api, workers):
                process.kill()
                process.wait()
            raise
        return cls(url, data_dir, prefix, env, log, api, workers)

    def submit(self, data: bytes, name: str = "image.jpg", **fields: str) -> httpx.Response:
        return self.http.post("/api/jobs", files={"image": (name, data)}, data=fields)

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(f"/api/jobs/{job_id}")
            if response.status_code == 200 and response.json()["status"] in ("done", "failed"):
                job: dict[str, Any] = response.json()
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} did not finish; log:\n{self.log.read_text()[-3000:]}")

    def submit_slow(self, name: str = "big.jpg", operations: str = SLOW_OPERATIONS) -> str:
        """Queue a slow job (see ``SLOW_OPERATIONS``, ``operations_lasting``); returns its id."""
        response = self.submit(encode(photo(2400, 2400), "jpeg"), name, operations=operations)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def wait_until_processing(self, job_id: str, timeout: float = 30) -> dict[str, str]:
        """The job's hash, read straight from Redis, once a worker has taken the job up."""
        raw = redis.Redis.from_url(self.env["REDIS_URL"], decode_responses=True)
        key = f"{{{self.prefix}}}:job:{job_id}"
        deadline = time.monotonic() + timeout
        try:
            while (fields := raw.hgetall(key)).get("status") != "processing":
                assert time.monotonic() < deadline, f"job {job_id} was never taken up"
                time.sleep(0.02)
        finally:
            raw.close()
        return fields  # type: ignore[no-any-return]

    def close(self) -> tuple[int, int]:
        self.http.close()
        return stop(self.api), stop(self.workers)


def module_service(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    concurrency: int = 2,
    *,
    clean_exit: bool = True,
    **settings: str,
) -> Iterator[Service]:
    """The body of a module's ``service`` fixture: API and workers on a fresh prefix
    (``<name>-…``) and data directory, with ``settings``; stopped afterwards, when (with
    ``clean_exit``) both must have exited 0."""
    root = tmp_path_factory.mktemp(name)
    running = Service.launch(
        redis_url, root / "data", f"{name}-{uuid.uuid4().hex[:8]}", concurrency, **settings
    )
    yield running
    statuses = running.close()
    if clean_exit:
        assert statuses == (0, 0), running.log.read_text()[-3000:]


def operations_lasting(seconds: float, max_steps: int = 10) -> tuple[str, float]:
    """Blur steps that keep a worker busy for at least ``seconds`` on this machine, now.

    The chain (sigma-40 blurs of the 2400x2400 ``submit_slow`` photo) is rendered here, as a
    worker renders it (one libvips thread, no operation cache), one step longer each time
    until it takes ``seconds``: long by construction on a fast machine, only longer on a slow
    one. (Cascaded blurs cost more than linearly, so each length is measured, not guessed.)
    Returns the operations JSON and the seconds its last render took.
    """
    from imgstream import imaging
    from imgstream.operations import JobSpec, Limits, parse_operations_json

    imaging.configure(concurrency=1, cache_max_mem_mb=0)
    source = encode(photo(2400, 2400), "jpeg")
    step = '{"op":"blur","sigma":40}'
    for steps in range(2, max_steps + 1):
        operations = "[" + ",".join([step] * steps) + "]"
        spec = JobSpec(operations=parse_operations_json(operations))
        began = time.perf_counter()
        imaging.render(source, spec, Limits())
        took = time.perf_counter() - began
        if took >= seconds:
            break
    return operations, took


def wait_for(condition: Callable[[], bool], message: str, timeout: float = 120) -> None:
    """Return once ``condition()`` holds; fail with ``message`` after ``timeout`` (a hang
    guard, not a measure: the condition is what the test waits on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def process_age(pid: int) -> float:
    """Seconds since process ``pid`` started (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in ticks
    return max(0.0, uptime - started)


def pid_of_consumer(consumer: str) -> int:
    """Consumer names are ``host-pid-random``."""
    return int(consumer.rsplit("-", 2)[1])
