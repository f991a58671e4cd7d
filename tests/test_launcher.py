"""``imgstream up`` as a user runs it: ready before it says so, alone in its data directory,
found by the other commands, and clear about why it could not start."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from imgstream.config import Settings
from imgstream.redis_server import free_port
from imgstream.runtime import find_redis
from imgstream.settings_backends import DEFAULT_REDIS_URL

from images import encode, photo
from service import pid_of_consumer

pytestmark = pytest.mark.slow


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def user_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A shell with no REDIS_URL and no IMGSTREAM_ settings but the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_")}
    env.pop("REDIS_URL", None)
    return {**env, "IMGSTREAM_DATA_DIR": str(data_dir), **extra}


def imgstream(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgstream", *arguments],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    output: list[str]

    def read_until(self, marker: str, timeout: float = 90) -> str:
        """Read ``up``'s output line by line until one contains ``marker``; that line."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        pending = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.output.append(line.decode(errors="replace"))
                if marker in self.output[-1]:
                    return self.output[-1]
        raise AssertionError(f"{marker!r} never came; output:\n" + "\n".join(self.output[-40:]))

    def finish(self, timeout: float = 60) -> int:
        """Wait for ``up`` to exit; its status, with the rest of its output read."""
        assert self.process.stdout is not None
        status = self.process.wait(timeout)
        if not self.process.stdout.closed:
            self.output += self.process.stdout.read().decode(errors="replace").splitlines()
            self.process.stdout.close()
        return status

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.finish()


def start_up(env: dict[str, str]) -> Up:
    process = subprocess.Popen(
        [sys.executable, "-m", "imgstream", "up"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Up(process, [])


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[tuple[Up, Path, int]]:
    data_dir = tmp_path / f"data-{uuid.uuid4().hex[:6]}"
    port = free_port()
    up = start_up(user_env(data_dir, IMGSTREAM_PORT=str(port), IMGSTREAM_CONCURRENCY="1"))
    try:
        yield up, data_dir, port
    finally:
        up.stop()


def test_up_says_it_is_up_only_once_the_api_answers_and_a_worker_reads(
    running_up: tuple[Up, Path, int],
) -> None:
    up, data_dir, port = running_up
    line = up.read_until("imgstream is up")
    assert line.startswith(f"imgstream is up: http://localhost:{port}")
    # At the moment it says so (no retry, no wait): the API answers, and a worker of this
    # `up` has joined the group and sent its heartbeat.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    runtime = json.loads((data_dir / "runtime.json").read_text())
    client = redis.Redis.from_url(runtime["redis_url"], decode_responses=True)
    try:
        workers = client.zrange("{imgstream}:workers", 0, -1)
        groups = client.xinfo_groups("{imgstream}:jobs")
    finally:
        client.close()
    assert [group["name"] for group in groups] == ["imgstream-workers"]
    assert any(
        name.startswith(socket.gethostname() + "-")
        and parent_of(parent_of(pid_of_consumer(name))) == up.process.pid
        for name in workers
    ), workers  # a worker process of this `up`'s worker pool


def test_the_other_commands_find_the_running_up_and_say_which_redis_and_api(
    running_up: tuple[Up, Path, int], tmp_path: Path
) -> None:
    up, data_dir, port = running_up
    up.read_until("imgstream is up")
    runtime = json.loads((data_dir / "runtime.json").read_text())
    assert runtime == {
        "redis_url": runtime["redis_url"],
        "api_url": f"http://127.0.0.1:{port}",
        "pid": up.process.pid,
    }
    assert runtime["redis_url"].startswith("redis://127.0.0.1:")
    assert not runtime["redis_url"].endswith(":6379/0")
    source = tmp_path / "photo.png"
    source.write_bytes(encode(photo(60, 40), "png"))
    env = user_env(data_dir)  # no REDIS_URL, no IMGSTREAM_PORT: 3000 would be the wrong API

    submitted = imgstream(env, "submit", str(source), "--op", "grayscale", "-o",
                          str(tmp_path / "out.png"))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert f"API: http://127.0.0.1:{port} (the `imgstream up` (pid {up.process.pid})" in (
        submitted.stderr
    )
    job_id = submitted.stderr.split("queued as job ")[1].split()[0]
    status = imgstream(env, "status", job_id)
    assert json.loads(status.stdout)["status"] == "done"

    said = f"Redis: {runtime['redis_url']} (the `imgstream up` (pid {up.process.pid})"
    stats = imgstream(env, "stats", "--json")
    assert stats.returncode == 0 and said in stats.stderr, stats.stderr
    assert json.loads(stats.stdout)["jobs"]["submitted"] == 1
    for command in (("dlq", "list"), ("gc",)):
        answer = imgstream(env, *command)
        assert answer.returncode == 0 and said in answer.stderr, answer.stderr
    added = imgstream(env, "worker", "--burst")  # a worker started by hand joins it too
    assert added.returncode == 0, added.stderr
    assert f"using Redis at {runtime['redis_url']} (the `imgstream up`" in added.stderr

    assert up.stop() == 0
    assert not (data_dir / "runtime.json").exists()
    # Nothing runs there now: a command would fall back to the default, and say so. Asked
    # without connecting, since the default is a server this test did not start.
    url, why = find_redis(Settings(redis_url=None, data_dir=data_dir))
    assert url == DEFAULT_REDIS_URL and why.startswith("the default: REDIS_URL is unset and no ")


def test_a_second_up_in_the_same_data_directory_refuses_and_touches_nothing(
    running_up: tuple[Up, Path, int],
) -> None:
    up, data_dir, _port = running_up
    up.read_until("imgstream is up")
    runtime = (data_dir / "runtime.json").read_text()
    redis_dir = data_dir / "redis"
    before = {path: path.stat().st_mtime_ns for path in redis_dir.rglob("*")}
    second = start_up(user_env(data_dir, IMGSTREAM_PORT=str(free_port())))
    status = second.finish()
    said = "\n".join(second.output)
    assert status == 1, said
    assert f"another `imgstream up` (pid {up.process.pid}) is running with the data directory" in (
        said
    )
    assert "imgstream is up" not in said and "redis-server" not in said
    assert (data_dir / "runtime.json").read_text() == runtime
    after = {path: path.stat().st_mtime_ns for path in redis_dir.rglob("*")}
    assert set(after) == set(before)
    assert httpx.get(json.loads(runtime)["api_url"] + "/healthz").status_code == 200
    assert up.process.poll() is None


def test_up_exits_with_the_reason_when_its_port_is_taken(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        up = start_up(user_env(data_dir, IMGSTREAM_PORT=str(port)))
        status = up.finish()
    said = "\n".join(up.output)
    assert status == 1, said
    assert f"imgstream could not start: port {port} on 127.0.0.1 is taken" in said
    assert "IMGSTREAM_PORT" in said and "imgstream is up" not in said
    assert not (data_dir / "runtime.json").exists()
    assert not (data_dir / "redis").exists()  # judged before anything was started
