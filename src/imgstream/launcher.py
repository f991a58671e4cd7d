"""``imgstream up``: the whole system in one command — Redis (if none is configured), API, workers.

Promises: the data directory is ``up``'s alone while it runs (a second ``up`` there refuses
at once and touches nothing); "imgstream is up" is printed only once the API answers
``/healthz`` and a worker of this ``up`` is reading the stream; a part that fails to start
(a taken port, a Redis that will not run) ends ``up`` with a non-zero status and the reason.

Each part runs in its own session, so Ctrl-C reaches only this process, which stops the
parts in order: the API first (no new jobs), then the workers (they finish what they hold),
then the private Redis (its append-only file flushed). Nothing is left running, and the
runtime file that tells the other commands where this Redis and API are is removed.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
import redis

from imgstream.config import Settings
from imgstream.connection import server_ms
from imgstream.heartbeats import consumer_origin
from imgstream.keys import Keys
from imgstream.processes import die_with_parent, parent_of
from imgstream.redis_server import RedisServer, RedisServerError
from imgstream.runtime import AlreadyRunning, Runtime, hold_data_dir, remove_runtime, write_runtime

log = logging.getLogger("imgstream.up")

LOCAL_HOSTS = ("127.0.0.1", "0.0.0.0", "localhost", "")
PROC = Path("/proc")


class StartFailed(Exception):
    """A part did not start; the message says which and why."""


def _start_part(name: str, arguments: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", name)
    return subprocess.Popen(
        [sys.executable, "-m", "imgstream", *arguments],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent,  # nothing outlives `up`, even if it is SIGKILLed
    )


def _stop_part(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def api_url(settings: Settings) -> str:
    """Where this machine reaches the API that ``settings`` describe."""
    host = "127.0.0.1" if settings.host in LOCAL_HOSTS else settings.host
    return f"http://{host}:{settings.port}"


def check_port_free(settings: Settings) -> None:
    """``StartFailed`` when the API's address is taken, before anything is started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # not ours to judge (an IPv6 or unusual host): uvicorn will say
            raise StartFailed(
                f"port {settings.port} on {settings.host} is taken by another program; stop it, "
                "or choose another port with IMGSTREAM_PORT"
            ) from None


def run_stack(settings: Settings, *, concurrency: int) -> int:
    """Run everything until Ctrl-C (or SIGTERM); the exit status for the command."""
    try:
        with hold_data_dir(settings.data_dir):
            return _run(settings, concurrency)
    except (AlreadyRunning, StartFailed, RedisServerError) as exc:
        print(f"imgstream could not start: {exc}", file=sys.stderr, flush=True)
        return 1


def _run(settings: Settings, concurrency: int) -> int:
    stopping = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    check_port_free(settings)

    private_redis: RedisServer | None = None
    redis_url = settings.redis_url
    parts: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        if redis_url is None:
            private_redis = RedisServer(
                settings.data_dir / "redis", appendfsync=settings.appendfsync, die_with_parent=True
            ).start()
            redis_url = private_redis.url
            log.info("started a private redis-server at %s (data in %s)",
                     redis_url, private_redis.directory)  # fmt: skip
        write_runtime(settings.data_dir, Runtime(redis_url, api_url(settings), os.getpid()))
        env = {**os.environ, "REDIS_URL": redis_url, "IMGSTREAM_DATA_DIR": str(settings.data_dir)}
        parts.append(_start_part("API", ["api"], env))
        parts.append(_start_part("workers", ["worker", "--concurrency", str(concurrency)], env))
        if not _wait_until_ready(settings, redis_url, parts, lambda: stopping):
            return 0  # asked to stop while starting
        host = "localhost" if settings.host in LOCAL_HOSTS else settings.host
        print(f"imgstream is up: http://{host}:{settings.port}  (Ctrl-C stops it)", flush=True)
        while not stopping:
            time.sleep(0.2)
            for process in parts:
                if process.poll() is not None:
                    log.error("a part exited with %s; stopping everything", process.returncode)
                    status = 1
                    stopping = True
    finally:
        for process in parts:  # the API first, then the workers
            _stop_part(process, settings.shutdown_grace + 5)
        if private_redis is not None:
            private_redis.stop()
        remove_runtime(settings.data_dir)
        log.info("stopped")
    return status


def _wait_until_ready(
    settings: Settings,
    redis_url: str,
    parts: list[subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
) -> bool:
    """Wait until the API answers and one of our workers beats; False if asked to stop.

    ``StartFailed`` when a part exits meanwhile, or nothing is ready within
    ``IMGSTREAM_STARTUP_TIMEOUT``.
    """
    api, workers = parts
    health = f"{api_url(settings)}/healthz"
    deadline = time.monotonic() + settings.startup_timeout
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    since_ms = _server_ms(client)
    answered = reading = False
    try:
        while not (answered and reading):
            if stopping():
                return False
            for name, process in (("API", api), ("workers", workers)):
                if process.poll() is not None:
                    raise StartFailed(
                        f"the {name} exited with status {process.returncode} while starting "
                        "(its messages are above)"
                    )
            if time.monotonic() > deadline:
                waiting = "the API to answer" if not answered else "a worker to start reading"
                raise StartFailed(
                    f"gave up waiting for {waiting} after {settings.startup_timeout:g} s "
                    "(IMGSTREAM_STARTUP_TIMEOUT)"
                )
            answered = answered or _answers(health)
            reading = reading or _our_worker_beat(client, Keys(settings.key_prefix),
                                                  workers.pid, since_ms)  # fmt: skip
            time.sleep(0.05)
        return True
    finally:
        client.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _server_ms(client: redis.Redis) -> int:
    return server_ms(client.time())


def _our_worker_beat(client: redis.Redis, keys: Keys, supervisor: int, since_ms: int) -> bool:
    """Has a worker process of this ``up`` (a child of its worker supervisor) sent a heartbeat
    since ``since_ms``? A worker's first beat follows its joining the consumer group."""
    host = socket.gethostname()
    for name in client.zrangebyscore(keys.workers, since_ms, "+inf"):
        origin = consumer_origin(str(name))
        if origin is not None and origin[0] == host:
            parent = parent_of(origin[1])
            if parent == supervisor or (parent is None and not PROC.is_dir()):
                return True  # (without /proc, a fresh beat from this host has to do)
    return False
