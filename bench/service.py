"""imgstream as it runs in production, started by the bench: ``imgstream api`` and ``worker``.

Every part is a real subprocess of this checkout's code against a private Redis; the bench
only adds load and reads Redis to see when work is done.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from imgstream.redis_server import free_port

from context import env
from httpload import Connection, multipart


@dataclass
class Imgstream:
    """API and worker processes sharing one Redis and one data directory."""

    redis_url: str
    data_dir: Path
    log: Path
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    api: subprocess.Popen[bytes] | None = None
    workers: subprocess.Popen[bytes] | None = None

    @property
    def stream(self) -> str:
        return f"{{{self.prefix}}}:jobs"

    def job_key(self, job_id: str) -> str:
        return f"{{{self.prefix}}}:job:{job_id}"

    def environment(self) -> dict[str, str]:
        settings = {
            "REDIS_URL": self.redis_url,
            "IMGSTREAM_DATA_DIR": str(self.data_dir),
            "IMGSTREAM_KEY_PREFIX": self.prefix,
            "IMGSTREAM_PORT": str(self.port),
            "IMGSTREAM_LOG_LEVEL": "WARNING",
            # The measured service is configured, not left to defaults meant for the public:
            # no backlog bound, no rate limits (one client sends everything).
            "IMGSTREAM_MAX_BACKLOG": "0",
            "IMGSTREAM_RATE_LIMIT_PER_SECOND": "0",
            "IMGSTREAM_READ_RATE_LIMIT_PER_SECOND": "0",
            # The bench sends the same images again and again to measure rendering: the
            # result cache would answer the repeats without a worker.
            "IMGSTREAM_RESULT_CACHE": "false",
        }
        return env(**{**settings, **self.settings})

    def _start(self, arguments: list[str]) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "imgstream", *arguments],
                env=self.environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_api(self) -> None:
        self.api = self._start(["api"])
        asyncio.run(self._wait_healthy())

    async def _wait_healthy(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"the API exited; see {self.log}")
            connection = Connection("127.0.0.1", self.port)
            try:
                if (await connection.request("GET", "/healthz")).status == 200:
                    return
            except OSError:
                pass
            finally:
                await connection.close()
            await asyncio.sleep(0.1)
        raise RuntimeError("the API did not become healthy")

    def start_workers(self, concurrency: int) -> None:
        """Start ``imgstream worker`` and wait until every process is blocked reading."""
        self.workers = self._start(["worker", "--concurrency", str(concurrency)])
        wait_readers(self.redis_url, concurrency, self.workers, self.log)

    def stop_workers(self) -> None:
        _stop(self.workers)
        self.workers = None

    def stop(self) -> None:
        _stop(self.api)
        self.stop_workers()
        self.api = None

    def worker_roots(self) -> list[int]:
        return [self.workers.pid] if self.workers else []

    def api_roots(self) -> list[int]:
        return [self.api.pid] if self.api else []


def wait_readers(
    url: str, count: int, process: subprocess.Popen[bytes], log: Path, command: str = "xreadgroup"
) -> None:
    """Wait until ``count`` clients of this Redis last sent ``command`` (a consumer is ready).

    The bench gives every system its own Redis, so the clients are that system's consumers.
    """
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the workers exited; see {log}")
            readers = [entry for entry in client.client_list() if entry.get("cmd") == command]
            if len(readers) >= count:
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"the workers did not start reading; see {log}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def upload_all(
    port: int, data: bytes, fields: dict[str, str], count: int, connections: int
) -> tuple[list[str], list[float]]:
    """POST ``count`` uploads over ``connections`` keep-alive connections.

    Returns the job ids and each upload's latency in seconds.
    """
    body, content_type = multipart(fields, "image.jpg", data)
    ids: list[str] = []
    latencies: list[float] = []
    remaining = iter(range(count))

    async def client() -> None:
        connection = Connection("127.0.0.1", port)
        try:
            for _ in remaining:
                began = time.perf_counter()
                response = await connection.request("POST", "/api/jobs", body, content_type)
                latencies.append(time.perf_counter() - began)
                if response.status != 202:
                    raise RuntimeError(f"upload refused: {response.status} {response.body!r}")
                ids.append(response.json()["id"])
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return ids, latencies


def wait_drained(client: redis.Redis, stream: str, timeout: float = 600) -> float:
    """Poll until the stream is empty (every job finished); returns the monotonic time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.xlen(stream) == 0:
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"{stream} did not drain within {timeout} s")


def count_status(client: redis.Redis, keys: list[str], status: str = "done") -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "status")
    return sum(1 for value in pipe.execute() if value == status.encode())
