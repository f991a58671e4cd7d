"""A worker pool's life, with real processes: what a stop does to the batch in hand, what the
shutdown grace allows, and how the next pool takes over what the last one left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from imgstream.redis_server import RedisServer

from fleet import deaths, worker_pids
from images import encode, photo
from service import (
    PNG,
    SLOW_OPERATIONS,
    Api,
    api_alone,
    operations_lasting,
    start,
    stop,
)

pytestmark = pytest.mark.slow

QUICK = 4


def submit(api: Api, http: httpx.Client, data: bytes, operations: str) -> str:
    response = http.post(
        f"{api.url}/api/jobs", files={"image": ("a.jpg", data)}, data={"operations": operations}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(raw: redis.Redis, api: Api, job_id: str) -> dict[str, str]:
    fields: dict[str, str] = raw.hgetall(f"{{{api.prefix}}}:job:{job_id}")  # type: ignore[assignment]
    return fields


def wait_for_status(
    raw: redis.Redis, api: Api, job_id: str, wanted: set[str], timeout: float = 120
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (fields := job(raw, api, job_id)).get("status") not in wanted:
        assert time.monotonic() < deadline, f"{job_id}: {fields}\n{api.log.read_text()[-3000:]}"
        time.sleep(0.02)
    return fields


def pending(raw: redis.Redis, api: Api) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = raw.xpending_range(
        f"{{{api.prefix}}}:jobs", "imgstream-workers", "-", "+", 100
    )
    return entries


def pool(api: Api, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    return start(["worker", "--concurrency", "1"], {**api.env, **settings}, log)


@pytest.fixture
def raw(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


def test_a_stop_finishes_the_job_in_hand_and_hands_the_rest_of_the_batch_back(
    redis_server: RedisServer, raw: redis.Redis, tmp_path: Path
) -> None:
    """Everything is queued before the pool starts, so its first read takes the slow job and
    the quick ones in one batch. SIGTERM while the slow one runs: it is finished; the others,
    never started, are marked idle for the visibility timeout (600 s here), so that the next
    pool takes them at once instead of ten minutes later."""
    with api_alone(redis_server.url, tmp_path, IMGSTREAM_VISIBILITY_TIMEOUT="600") as api:
        with httpx.Client(timeout=30) as http:
            slow = submit(api, http, encode(photo(2400, 2400), "jpeg"), SLOW_OPERATIONS)
            quick = [submit(api, http, PNG, '[{"op":"grayscale"}]') for _ in range(QUICK)]
        first = pool(api, tmp_path / "first.log")
        wait_for_status(raw, api, slow, {"processing"})
        held = pending(raw, api)
        assert len(held) == 1 + QUICK and len({entry["consumer"] for entry in held}) == 1
        assert stop(first) == 0, (tmp_path / "first.log").read_text()[-3000:]

        assert job(raw, api, slow)["status"] == "done"
        for job_id in quick:
            fields = job(raw, api, job_id)
            assert (fields["status"], fields.get("attempts", "0")) == ("queued", "0"), fields
        handed_back = pending(raw, api)
        assert len(handed_back) == QUICK
        assert all(entry["time_since_delivered"] >= 600_000 for entry in handed_back)

        second = pool(api, tmp_path / "second.log")
        try:
            for job_id in quick:
                fields = wait_for_status(raw, api, job_id, {"done", "failed"})
                assert (fields["status"], fields["attempts"]) == ("done", "1"), fields
        finally:
            stop(second)


def test_a_job_past_the_shutdown_grace_is_killed_and_recovered(
    redis_server: RedisServer, raw: redis.Redis, tmp_path: Path
) -> None:
    """``IMGSTREAM_SHUTDOWN_GRACE=0``: the supervisor kills a worker 2 s after SIGTERM. The
    job is measured to last at least 6 s, so it is still running then; it stays unfinished,
    and a later pool takes it over after the visibility timeout and finishes it."""
    operations, _ = operations_lasting(6)
    with api_alone(redis_server.url, tmp_path, IMGSTREAM_VISIBILITY_TIMEOUT="3") as api:
        with httpx.Client(timeout=30) as http:
            job_id = submit(api, http, encode(photo(2400, 2400), "jpeg"), operations)
        log = tmp_path / "first.log"
        first = pool(api, log, IMGSTREAM_SHUTDOWN_GRACE="0")
        wait_for_status(raw, api, job_id, {"processing"})
        assert stop(first, signal.SIGTERM) == 1, log.read_text()[-3000:]
        assert "ignored the grace period; killing it" in log.read_text()
        fields = job(raw, api, job_id)
        assert (fields["status"], fields["attempts"]) == ("processing", "1"), fields

        second = pool(api, tmp_path / "second.log")
        try:
            fields = wait_for_status(raw, api, job_id, {"done", "failed"}, timeout=300)
        finally:
            stop(second)
        assert (fields["status"], fields["attempts"]) == ("done", "2"), fields


def test_a_worker_that_keeps_dying_young_is_restarted_ever_more_slowly(
    redis_server: RedisServer, raw: redis.Redis, tmp_path: Path
) -> None:
    """Each new worker process is SIGKILLed as soon as it appears (well within the 2 s that
    count as young): the supervisor waits 0.25, 0.5, 1 and 2 s before the next ones; left
    alone, the fifth serves."""
    with api_alone(redis_server.url, tmp_path) as api:
        log = tmp_path / "pool.log"
        workers = pool(api, log)
        try:
            killed: list[int] = []
            deadline = time.monotonic() + 120
            while len(killed) < 4:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                for pid in set(worker_pids(workers.pid)) - set(killed):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.005)
            while len(deaths(log.read_text())) < 4:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.02)
            pauses = [
                float(re.findall(r"restarting in ([0-9.]+) s", line)[0])
                for line in deaths(log.read_text())
            ]
            assert pauses == [0.2, 0.5, 1.0, 2.0], pauses  # 0.25 is logged as 0.2
            with httpx.Client(timeout=30) as http:
                job_id = submit(api, http, PNG, '[{"op":"grayscale"}]')
            assert wait_for_status(raw, api, job_id, {"done", "failed"})["status"] == "done"
            assert len(deaths(log.read_text())) == 4
        finally:
            stop(workers)
