"""Connecting to Redis by every kind of URL redis-py takes, against a real server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgstream.connection import connect
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.redis_server import find_redis_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A redis-server listening on a Unix socket only (no TCP port)."""
    socket = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(socket), "--save", "",
         "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, (tmp_path / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server made no socket in 30 s"
            time.sleep(0.02)
        yield socket
    finally:
        process.terminate()
        process.wait(10)


async def test_a_unix_socket_url_connects(unix_socket: Path) -> None:
    """``REDIS_URL=unix:///path/redis.sock``: TCP keepalive, which the client asks for on
    TCP, is not offered to a Unix socket (redis-py refused the connection over it)."""
    redis = connect(f"unix://{unix_socket}?db=0", timeout=5.0)
    try:
        queue = JobQueue(redis, Keys("unix"), "workers")
        await queue.ensure_group()
        assert await queue.ping()
        assert await queue.backlog() == 0
    finally:
        await redis.aclose()
