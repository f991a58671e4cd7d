"""``imgstream up``: the whole system in one command — Redis (if none is configured), API, workers.

Each part runs in its own session, so Ctrl-C reaches only this process, which stops the
parts in order: the API first (no new jobs), then the workers (they finish what they hold),
then the private Redis (its append-only file flushed). Nothing is left running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from imgstream.config import Settings
from imgstream.processes import die_with_parent
from imgstream.redis_server import RedisServer

log = logging.getLogger("imgstream.up")


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


def run_stack(settings: Settings, *, concurrency: int) -> int:
    stopping = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    private_redis: RedisServer | None = None
    redis_url = settings.redis_url
    if redis_url is None:
        private_redis = RedisServer(
            settings.data_dir / "redis", appendfsync=settings.appendfsync, die_with_parent=True
        ).start()
        redis_url = private_redis.url
        log.info(
            "started a private redis-server at %s (data in %s)", redis_url, private_redis.directory
        )

    env = {**os.environ, "REDIS_URL": redis_url, "IMGSTREAM_DATA_DIR": str(settings.data_dir)}
    parts: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        parts.append(_start_part("API", ["api"], env))
        parts.append(_start_part("workers", ["worker", "--concurrency", str(concurrency)], env))
        host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0") else settings.host
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
        log.info("stopped")
    return status
