"""Stats: the monitor's snapshot against real Redis, ``/api/stats``, the dashboard page, retrying
a dead letter over HTTP, ``imgstream stats``, and a killed worker's pending entries."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.asyncio import Redis
from rich.console import Console

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.fleet_snapshot import Monitor
from imgstream.heartbeats import Presence
from imgstream.keys import Keys
from imgstream.lifecycle import JobStatus
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer
from imgstream.stats_view import render
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import client_for, store_and_enqueue
from service import Service, pid_of_consumer

OPS = '[{"op":"grayscale"}]'


async def enqueue(queue: JobQueue, storage: LocalStorage) -> str:
    return await store_and_enqueue(queue, storage, OPS, encode(photo(20, 20), "png"))


@pytest.mark.anyio
async def test_a_deployment_nobody_used_yet_reads_as_empty(queue: JobQueue, redis: Redis) -> None:
    snapshot = await Monitor(redis, queue.keys, queue.group, live_within=30).snapshot()
    stats = snapshot.to_json()
    assert stats["queue"] == {"backlog": 0, "waiting": 0, "pending": 0, "dead_letters": 0}
    assert stats["consumers"] == [] and stats["live_consumers"] == 0
    assert stats["jobs"]["done"] == 0 and stats["storage"] is None
    assert stats["throughput"]["per_second"] == 0
    assert len(stats["throughput"]["history"]["done"]) == 121


@pytest.mark.anyio
async def test_consumers_show_what_they_hold_and_when_they_were_seen(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    storage = LocalStorage(settings.data_dir)
    for _ in range(3):
        await enqueue(queue, storage)
    await queue.read("holder", count=2, block_ms=10)
    # Two windows: an hour, that nothing on a slow machine outlasts, for "live"; a tenth of a
    # second, that a sleep outlasts by construction, for "silent".
    monitor = Monitor(redis, queue.keys, queue.group, live_within=3600)
    strict = Monitor(redis, queue.keys, queue.group, live_within=0.1)
    fresh = await monitor.snapshot()
    assert (fresh.backlog, fresh.waiting, fresh.pending) == (3, 1, 2)
    [holder] = fresh.consumers
    assert (holder.name, holder.pending, holder.seen_seconds, holder.live) == (
        "holder", 2, None, False  # the group knows it; no heartbeat: not known to be alive
    )  # fmt: skip
    assert not await monitor.worker_seen_within(3600)

    presence = Presence(redis, queue.keys)
    await presence.beat("holder", forget_after=3600)
    await presence.beat("idle-worker", forget_after=3600)  # never served: the group can't tell
    holder, idle_worker = (await monitor.snapshot()).consumers
    assert holder.live and holder.pending == 2 and holder.idle_seconds is not None
    assert idle_worker.name == "idle-worker" and idle_worker.live
    assert idle_worker.pending == 0 and idle_worker.idle_seconds is None
    assert await monitor.worker_seen_within(3600)

    await anyio.sleep(0.2)
    silent, _ = (await strict.snapshot()).consumers
    assert silent.pending == 2 and not silent.live
    assert silent.seen_seconds is not None and silent.seen_seconds >= 0.2
    assert silent.idle_seconds is not None and silent.idle_seconds >= 0.2
    assert (await strict.snapshot()).live_consumers == 0
    assert (await monitor.snapshot()).live_consumers == 2  # the same beats, the hour window
    assert not await strict.worker_seen_within(0.1)
    await presence.leave("idle-worker")
    assert [c.name for c in (await monitor.snapshot()).consumers] == ["holder"]


@pytest.mark.anyio
async def test_stats_api_and_retrying_a_dead_letter(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    storage = LocalStorage(settings.data_dir)
    job_id = await enqueue(queue, storage)
    [delivery] = await queue.read("c", count=1, block_ms=10)
    await queue.start(delivery, "lease", "c", 1)
    await queue.fail(delivery, "lease", code="x", message="gave up", ttl=60, dead_letter=True)
    async with client_for(create_app(settings)) as client:
        stats = (await client.get("/api/stats")).json()
        [letter] = stats["dead_letters"]
        assert stats["queue"]["dead_letters"] == 1
        assert (letter["job_id"], letter["reason"]) == (job_id, "gave up")
        assert (await client.post("/api/dead-letters/0-1/retry")).status_code == 404
        assert (await client.post("/api/dead-letters/..%2Fx/retry")).status_code == 404
        retried = await client.post(f"/api/dead-letters/{letter['entry_id']}/retry")
        assert retried.status_code == 202, retried.text
        assert retried.json()["entry"]
        after = (await client.get("/api/stats")).json()
    assert after["queue"]["dead_letters"] == 0 and after["queue"]["backlog"] == 1
    record = await queue.get_job(job_id)
    assert record is not None and record.status is JobStatus.QUEUED
    await Worker(settings, queue, storage).run(burst=True)
    done = await queue.get_job(job_id)
    assert done is not None and done.status is JobStatus.DONE


@pytest.mark.anyio
async def test_dashboard_page_is_served_under_the_strict_policy(settings: Settings) -> None:
    async with client_for(create_app(settings)) as client:
        page = await client.get("/dashboard")
        script = await client.get("/static/dashboard.js")
        style = await client.get("/static/dashboard.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert '<script type="module" src="/static/dashboard.js"></script>' in page.text
    assert "<style" not in page.text and " style=" not in page.text and "onclick" not in page.text
    assert script.status_code == 200 and "/api/stats" in script.text
    assert "innerHTML" not in script.text  # every server text goes through textContent
    assert style.status_code == 200


@pytest.mark.anyio
async def test_readiness_needs_a_worker_seen_lately(queue: JobQueue, settings: Settings) -> None:
    """Without any worker /readyz fails (503 ``no_workers``); one read makes it ready; a
    worker silent for longer than ``IMGSTREAM_READY_WORKER_AGE`` no longer counts; 0: no check."""
    async with client_for(create_app(settings)) as client:
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "no_workers"
        await Presence(queue.redis, queue.keys).beat("worker-1", forget_after=3600)
        assert (await client.get("/readyz")).json() == {"status": "ready"}
    strict = settings.model_copy(update={"ready_worker_age": 0.2})
    async with client_for(create_app(strict)) as client:
        await anyio.sleep(0.3)
        assert (await client.get("/readyz")).status_code == 503
    unchecked = settings.model_copy(update={"ready_worker_age": 0})
    async with client_for(create_app(unchecked)) as client:
        await queue.redis.delete(queue.keys.workers)
        assert (await client.get("/readyz")).json() == {"status": "ready"}


def test_terminal_view_shows_workers_failures_and_dead_letters() -> None:
    stats: dict[str, Any] = {
        "at": 1_800_000_000.0,
        "queue": {"backlog": 7, "waiting": 5, "pending": 2, "dead_letters": 1},
        "consumers": [{"name": "host-42-abc", "pending": 2, "idle_seconds": 61.5,
                       "seen_seconds": 75.25, "live": False}],
        "live_consumers": 0,
        "jobs": {
            "submitted": 9, "done": 3, "failed": 1, "mean_end_to_end_seconds": 0.5,
            "by_operation": {"resize": {"submitted": 9, "done": 3, "failed": 1,
                                        "mean_processing_seconds": 0.25}},
        },
        "throughput": {"per_second": 0.05, "failure_rate": 0.25},
        "recent_failures": [{"at": 1_800_000_000.0, "job": "f" * 32, "error_code": "decode_error",
                             "error": "[bold]not markup[/bold]", "operation": "resize",
                             "consumer": "host-42-abc"}],
        "dead_letters": [{"entry_id": "1-0", "job_id": "e" * 32, "deliveries": 3,
                          "reason": "poison", "failed_at": "", "operations": "", "format": ""}],
        "storage": {"originals": 4, "originals_bytes": 4096, "results": 3, "results_bytes": 10,
                    "temporary": 0, "scanned_at": 1_800_000_000.0},
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render(stats))
    text = console.export_text()
    for expected in ("backlog 7", "pending 2", "host-42-abc", "not seen", "61.5", "75.2", "f" * 32,
                     "[bold]not markup[/bold]", "poison", "4 originals (4.0 KiB)"):  # fmt: skip
        assert expected in text, expected


# Real API and worker processes.


def stats_of(service: Service) -> dict[str, Any]:
    response = service.http.get("/api/stats")
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


@pytest.mark.slow
def test_stats_show_a_killed_workers_pending_entry_until_it_is_taken_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The visibility timeout is longer than the readings below can take (each has its own
    # timeout, 30 s): no live worker can take the entry over while the stats are read, however
    # loaded the machine (with 8 s, a slow ``imgstream stats`` once found it taken over
    # already). The timeout's passing is then made to happen rather than waited for.
    visibility = 120
    prefix = f"mon-{uuid.uuid4().hex[:8]}"
    service = Service.launch(
        redis_server.url, tmp_path / "data", prefix, concurrency=2,
        IMGSTREAM_VISIBILITY_TIMEOUT=str(visibility), IMGSTREAM_JOB_TIMEOUT="300",
    )  # fmt: skip
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    keys = Keys(prefix)
    try:
        job_id = service.submit_slow()
        job = service.wait_until_processing(job_id)
        victim = job["worker"]
        os.kill(pid_of_consumer(victim), signal.SIGKILL)
        time.sleep(0.5)
        stats = stats_of(service)
        seen = {c["name"]: c for c in stats["consumers"]}
        assert seen[victim]["pending"] == 1 and seen[victim]["seen_seconds"] >= 0.5
        assert stats["queue"]["pending"] == 1
        # The other worker is live, and so is the victim's replacement once it has sent its
        # first heartbeat (until then, having joined the group, it is listed as not live).
        others = [c for name, c in seen.items() if name != victim]
        beating = [c["live"] for c in others if c["seen_seconds"] is not None]
        assert beating and all(beating), seen

        cli = subprocess.run(
            [sys.executable, "-m", "imgstream", "stats", "--json"],
            env=service.env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        from_cli = {c["name"]: c for c in json.loads(cli.stdout)["consumers"]}
        assert from_cli[victim]["pending"] == 1

        # The visibility timeout passes: the victim's entry has been idle that long, and its
        # last heartbeat is that old.
        raw.xclaim(
            keys.stream, "imgstream-workers", victim, 0, [job["entry"]],
            idle=visibility * 1000, justid=True,
        )  # fmt: skip
        raw.zincrby(keys.workers, -visibility * 1000, victim)
        deadline = time.monotonic() + 90  # a live worker's next recovery pass takes it over
        while True:
            seen = {c["name"]: c for c in stats_of(service)["consumers"]}
            others = [c for name, c in seen.items() if name != victim]
            if seen.get(victim, {"pending": 0})["pending"] == 0 and (
                any(c["pending"] == 1 and c["live"] for c in others)
                # or the new holder finished the job between two readings (a loaded machine)
                or raw.hget(keys.job(job_id), "status") == JobStatus.DONE
            ):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        assert raw.hget(keys.job(job_id), "worker") not in (None, victim)
        assert not seen[victim]["live"]  # unheard of for the visibility timeout
    finally:
        raw.close()
        service.close()
