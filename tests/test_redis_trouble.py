"""A sick Redis against the real service (issue 11): out of memory, unable to persist, frozen
(SIGSTOP), evicting, or with its connections all taken. Each test starts a redis-server of its
own, so it may break it at will.

Promises checked: the API answers ``503`` JSON with ``Retry-After`` and the cause, never a
plain 500 or a hang; ``/readyz`` names the cause; workers wait with their job in hand and
finish it once Redis recovers, without exiting; nothing runs against an evicting Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from imgstream.redis_server import RedisServer

from fleet import worker_pids
from images import encode, photo
from service import Service, start, wait_until_healthy

pytestmark = pytest.mark.slow

GUARD = 60.0
"""Seconds a request may take before the test calls it a hang (never a timing assert)."""
PNG = encode(photo(64, 48), "png")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    try:
        yield server
    finally:
        assert server.process is not None
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True, socket_timeout=GUARD)


def launch(server: RedisServer, tmp_path: Path, **extra: str) -> Service:
    return Service.launch(
        server.url, tmp_path / "data", f"sick-{uuid.uuid4().hex[:8]}", concurrency=1, **extra
    )


def until(condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition``, looking every few milliseconds; GUARD is a hang guard only."""
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def assert_503(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) >= 1
    message: str = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    return message


def test_out_of_memory_answers_503_and_workers_keep_their_job(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    service = launch(own_redis, tmp_path)
    control = admin(own_redis)
    try:
        job_id = service.submit_slow()
        service.wait_until_processing(job_id)
        workers = worker_pids(service.workers.pid)
        control.config_set("maxmemory", "1")  # noeviction (the default): every write refused
        refused = service.submit(PNG, "a.png", operation="grayscale")
        assert_503(refused, "out of memory")
        assert_503(service.http.get("/readyz"), "out of memory")
        assert list((service.data_dir / "originals").iterdir()) != []  # the slow job's own
        # the worker's outcome cannot be recorded: it says so and waits
        until(lambda: "out of memory" in service.log.read_text(), "the worker logs the cause")
        assert worker_pids(service.workers.pid) == workers
        control.config_set("maxmemory", "0")
        job = service.wait(job_id)
        assert job["status"] == "done" and job["attempts"] == 1, job
        assert worker_pids(service.workers.pid) == workers, "a worker exited"
        originals = {path.name for path in (service.data_dir / "originals").iterdir()}
        assert originals == {job_id}, "the refused upload left its file behind"
    finally:
        control.config_set("maxmemory", "0")
        control.close()
        service.close()


def test_unable_to_persist_answers_503(tmp_path: Path) -> None:
    doomed = tmp_path / "doomed"
    server = RedisServer(doomed, appendonly=False).start()
    service = launch(server, tmp_path)
    control = admin(server)
    try:
        shutil.rmtree(doomed)  # its snapshot cannot be written: MISCONF from here on
        control.config_set("save", "3600 1")
        control.config_set("stop-writes-on-bgsave-error", "yes")
        control.bgsave()
        until(
            lambda: control.info("persistence")["rdb_last_bgsave_status"] == "err",
            "the snapshot fails",
        )
        assert_503(service.submit(PNG, "a.png", operation="grayscale"), "persist")
        assert_503(service.http.get("/readyz"), "persist")
    finally:
        control.config_set("save", "")
        control.close()
        service.close()
        server.stop()


def test_a_frozen_redis_gets_503_not_a_hang(own_redis: RedisServer, tmp_path: Path) -> None:
    service = launch(own_redis, tmp_path, IMGSTREAM_REDIS_TIMEOUT="1")
    assert own_redis.process is not None
    try:
        job_id = service.submit(PNG, "a.png", operation="grayscale").json()["id"]
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        with httpx.Client(base_url=service.url, timeout=GUARD) as client:
            assert_503(client.get(f"/api/jobs/{job_id}"))
            assert_503(client.get("/readyz"), "IMGSTREAM_READY_TIMEOUT")
            assert_503(client.post("/api/jobs", files={"image": ("a.png", PNG)},
                                   data={"operation": "grayscale"}))  # fmt: skip
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert service.wait(job_id)["status"] == "done"
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        service.close()


def test_a_full_pool_answers_503_busy_and_the_limit_fails_closed(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Two connections, both taken by requests stuck on a frozen Redis: the others wait
    briefly and are told the server is busy; the rate limit refuses rather than waves through."""
    service = launch(
        own_redis,
        tmp_path,
        IMGSTREAM_REDIS_MAX_CONNECTIONS="2",
        IMGSTREAM_REDIS_POOL_WAIT="0.2",
        IMGSTREAM_REDIS_TIMEOUT="30",
        IMGSTREAM_RATE_LIMIT_PER_SECOND="100",
    )
    assert own_redis.process is not None
    missing = f"/api/jobs/{'0' * 32}"
    try:
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        with (
            httpx.Client(base_url=service.url, timeout=GUARD) as client,
            ThreadPoolExecutor(6) as pool,
        ):
            answers = [pool.submit(client.get, missing) for _ in range(6)]
            until(lambda: sum(answer.done() for answer in answers) == 4, "four answered")
            for answer in (future.result() for future in answers if future.done()):
                assert_503(answer, "busy")
                assert answer.json()["error"]["code"] == "busy"
            assert_503(client.post("/api/dead-letters/not-an-id/retry"), "busy")
            os.kill(own_redis.process.pid, signal.SIGCONT)
            codes = sorted(future.result().status_code for future in answers)
            assert codes == [404, 404, 503, 503, 503, 503]
        assert service.http.post("/api/dead-letters/not-an-id/retry").status_code == 404
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        service.close()


def test_an_evicting_redis_is_refused_unless_allowed(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    control = admin(own_redis)
    control.config_set("maxmemory-policy", "allkeys-lru")
    service = launch(own_redis, tmp_path, IMGSTREAM_READY_WORKER_AGE="0")
    try:
        assert service.workers.wait(GUARD) == 78  # EX_CONFIG: the pool stops, no restarts
        assert_503(service.http.get("/readyz"), "maxmemory-policy", "allkeys-lru")
        assert "maxmemory-policy" in service.log.read_text()
        stats = service.http.get("/api/stats").json()
        assert stats["redis_memory"]["policy"] == "allkeys-lru"
        assert "imgstream_redis_memory_used_bytes" in service.http.get("/metrics").text
    finally:
        service.close()

    allowed = dict(service.env, IMGSTREAM_ALLOW_EVICTION="true")
    api = start(["api"], allowed, service.log)
    workers = start(["worker", "--concurrency", "1"], allowed, service.log)
    try:
        wait_until_healthy(service.url, api)
        assert httpx.get(f"{service.url}/readyz", timeout=GUARD).status_code == 200
        answer = httpx.post(f"{service.url}/api/jobs", files={"image": ("a.png", PNG)},
                            data={"operation": "grayscale"}, timeout=GUARD)  # fmt: skip
        assert answer.status_code == 202, answer.text
        job_key = "{" + service.prefix + "}:job:" + answer.json()["id"]
        until(lambda: control.hget(job_key, "status") == "done", "the job is done")
        assert workers.poll() is None
    finally:
        control.close()
        for process in (api, workers):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(GUARD)
            except subprocess.TimeoutExpired:
                process.kill()
