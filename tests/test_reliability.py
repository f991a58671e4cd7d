"""Never lose a job: kill workers, kill Redis, poison jobs, long jobs, graceful stops.

Every test runs the real API and worker processes against a real redis-server.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from imgstream import imaging
from imgstream.operations import JobSpec, Limits, parse_operations_json
from imgstream.redis_server import RedisServer, free_port
from imgstream.setting_values import AppendFsync
from pacing import Uploads, feed_and_kill, listen_for_final_statuses, oldest_holder

from fleet import worker_pids
from images import encode, photo
from service import (
    SLOW_OPERATIONS,
    Service,
    operations_lasting,
    pid_of_consumer,
    stop,
    wait_for,
)

pytestmark = pytest.mark.slow

FAST_RECOVERY = {
    "IMGSTREAM_VISIBILITY_TIMEOUT": "1",
    "IMGSTREAM_RETRY_BACKOFF": "0.05",
    "IMGSTREAM_LOG_LEVEL": "INFO",
}


def new_prefix() -> str:
    return f"rel-{uuid.uuid4().hex[:8]}"


KILLS = 11
"""Workers the chaos test SIGKILLs while they hold a job."""
KILL_EVERY = 10
"""Jobs that must end between two kills: kills are paced by progress, never by the clock."""


def test_chaos_killing_workers_loses_and_duplicates_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = new_prefix()
    service = Service.launch(
        redis_server.url, tmp_path / "data", prefix, concurrency=3,
        IMGSTREAM_MAX_ATTEMPTS="20", IMGSTREAM_READ_BATCH="4", **FAST_RECOVERY,
    )  # fmt: skip
    finals, _, drain = listen_for_final_statuses(redis_server.url, prefix)
    operations = '[{"op":"blur","sigma":2},{"op":"resize","width":200}]'
    sources = [encode(photo(480 + 16 * index, 360, seed=index), "png") for index in range(5)]
    spec = JobSpec(operations=parse_operations_json(operations))
    expected = [imaging.render(source, spec, Limits()) for source in sources]
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def submit(index: int) -> str:
        response = service.submit(sources[index % 5], f"{index}.png", operations=operations)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    try:
        ids, kills = feed_and_kill(
            submit,
            lambda: oldest_holder(raw, [f"{{{prefix}}}:jobs"], service.workers.pid),
            finals,
            jobs=300,
            kills=KILLS,
            kill_every=KILL_EVERY,
        )
        results = {job_id: service.wait(job_id, timeout=600) for job_id in ids}
    finally:
        drain()
        raw.close()
        service.close()
    jobs = [(job_id, index % 5) for index, job_id in enumerate(ids)]

    assert len(kills) == KILLS, kills
    assert "took over entry" in service.log.read_text(), "killed workers' jobs must be recovered"
    for job_id, source_index in jobs:
        job = results[job_id]
        assert job["status"] == "done", job
        wanted = expected[source_index]
        assert (job["result"]["width"], job["result"]["height"]) == (wanted.width, wanted.height)
        assert job["result"]["bytes"] == len(wanted.data)
    stored = [p for p in (service.data_dir / "results").iterdir() if not p.name.startswith(".")]
    assert sorted(p.stem for p in stored) == sorted(job_id for job_id, _ in jobs)
    sample_id, sample_source = jobs[7]
    assert (service.data_dir / "results" / f"{sample_id}.png").read_bytes() == expected[
        sample_source
    ].data
    assert set(finals.values()) == {1}, [k for k, v in finals.items() if v != 1]
    assert len(finals) == len(jobs)


def test_a_job_longer_than_the_visibility_timeout_runs_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    visibility = 0.5
    # Long by construction: as many blur steps as 8 visibility timeouts take on this machine.
    operations, _ = operations_lasting(8 * visibility)
    service = Service.launch(
        redis_server.url, tmp_path / "data", new_prefix(), concurrency=2,
        **{**FAST_RECOVERY, "IMGSTREAM_VISIBILITY_TIMEOUT": str(visibility)},
    )  # fmt: skip
    try:
        job = service.wait(service.submit_slow(operations=operations), timeout=600)
    finally:
        service.close()
    assert job["status"] == "done", job
    processing = _seconds_between(job["started_at"], job["finished_at"])
    assert processing > 3 * visibility, (
        f"the job took {processing:.2f} s: it must outlast the visibility timeout several times"
    )
    assert job["attempts"] == 1
    assert "took over" not in service.log.read_text()


def _seconds_between(start: str, end: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def test_poison_job_is_dead_lettered_and_others_are_unaffected(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = new_prefix()
    service = Service.launch(
        redis_server.url, tmp_path / "data", prefix, concurrency=2,
        IMGSTREAM_MAX_ATTEMPTS="2", **FAST_RECOVERY,
    )  # fmt: skip
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        before = service.submit(encode(photo(60, 40), "png"), "a.png", operation="grayscale")
        poison = service.submit(
            encode(photo(2400, 2400), "jpeg"), "p.jpg", operations=SLOW_OPERATIONS
        )
        after = service.submit(encode(photo(60, 40), "png"), "b.png", operation="grayscale")
        poison_id = poison.json()["id"]
        key = f"{{{prefix}}}:job:{poison_id}"
        killed: set[str] = set()
        deadline = time.monotonic() + 90
        while raw.hget(key, "status") != "failed":  # a crash every time the job is taken up
            assert time.monotonic() < deadline, service.log.read_text()[-3000:]
            status, consumer, lease = raw.hmget(key, "status", "worker", "lease")
            if status == "processing" and consumer and lease and lease not in killed:
                os.kill(pid_of_consumer(consumer), signal.SIGKILL)
                killed.add(lease)
            time.sleep(0.02)
        job = service.wait(poison_id)
        dead = raw.xrange(f"{{{prefix}}}:dead")
        others = [service.wait(r.json()["id"]) for r in (before, after)]
        healthy = len(worker_pids(service.workers.pid))
    finally:
        raw.close()
        service.close()
    assert len(killed) == 2
    assert job["status"] == "failed" and job["error_code"] == "poison", job
    assert "IMGSTREAM_MAX_ATTEMPTS" in job["error"]
    [(_, letter)] = dead
    assert letter["job"] == poison_id and letter["deliveries"] == "2" and letter["reason"]
    assert [other["status"] for other in others] == ["done", "done"]
    assert healthy == 2


def test_sigterm_finishes_the_job_in_hand_and_exits_zero(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = new_prefix()
    service = Service.launch(
        redis_server.url, tmp_path / "data", prefix, concurrency=1, **FAST_RECOVERY
    )
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        job_id = service.submit_slow()
        service.wait_until_processing(job_id)
        worker_status = stop(service.workers, signal.SIGTERM, timeout=60)
        job = service.wait(job_id, timeout=5)
        pending = raw.xpending(f"{{{prefix}}}:jobs", "imgstream-workers")
    finally:
        raw.close()
        service.close()
    assert worker_status == 0, service.log.read_text()[-3000:]
    assert job["status"] == "done" and job["attempts"] == 1
    assert pending["pending"] == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Redis as ``imgstream up`` runs it: append-only file, the default ``everysec`` fsync.

    Killing the Redis process leaves what it wrote in the kernel's page cache, so
    ``appendfsync always`` would change nothing here; it guards against a power loss or a
    kernel crash, which no test can stage (docs/reliability.md says so).
    """
    server = RedisServer(tmp_path / "redis", port=free_port())
    assert server.appendfsync is AppendFsync.EVERYSEC
    server.start()
    yield server
    server.stop()


def test_redis_killed_mid_run_loses_no_accepted_job(own_redis: RedisServer, tmp_path: Path) -> None:
    """Paced by answers, not by time: Redis is killed after 20 uploads were accepted, started
    again once 3 met the dead Redis, and uploads go on until 20 more were accepted."""
    service = Service.launch(
        own_redis.url, tmp_path / "data", new_prefix(), concurrency=2, **FAST_RECOVERY
    )
    uploads = Uploads(service)
    accepted, refused = uploads.accepted, uploads.refused
    try:
        wait_for(lambda: len(accepted) >= 20, "uploads were not accepted")
        own_redis.kill()
        wait_for(lambda: len(refused) >= 3, "no upload met the dead Redis")
        own_redis.start()
        before = len(accepted)
        wait_for(lambda: len(accepted) >= before + 20, "uploads were not accepted again")
        uploads.finish()
        jobs = [service.wait(job_id, timeout=60) for job_id in accepted]
    finally:
        uploads.finish()
        service.close()
    assert {r.status_code for r in refused} == {503}
    assert all(r.headers.get("retry-after") for r in refused)
    assert [job["status"] for job in jobs] == ["done"] * len(jobs)


def test_redis_stopped_for_a_while_then_everything_recovers(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    service = Service.launch(
        own_redis.url, tmp_path / "data", new_prefix(), concurrency=2, **FAST_RECOVERY
    )
    image = encode(photo(300, 200), "png")
    try:
        before = [service.submit(image, "a.png", operation="blur").json()["id"] for _ in range(10)]
        own_redis.stop()
        down = service.submit(image, "b.png", operation="blur")
        not_ready = service.http.get("/readyz")
        status_down = service.http.get(f"/api/jobs/{before[0]}")
        time.sleep(3)
        own_redis.start()
        deadline = time.monotonic() + 30
        while service.http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = service.submit(image, "c.png", operation="blur")
        jobs = [service.wait(job_id, timeout=60) for job_id in [*before, after.json()["id"]]]
    finally:
        service.close()
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.json()["error"]["code"] == "unavailable"
    assert not_ready.status_code == 503 and status_down.status_code == 503
    assert after.status_code == 202
    assert [job["status"] for job in jobs] == ["done"] * 11
