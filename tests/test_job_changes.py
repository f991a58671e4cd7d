"""Many event streams against a real API process (issue 11): they share one Redis subscription,
cost no Redis connections of their own, each ends with the job's final status, and the caps
per client and per process answer 429 / 503 JSON.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from imgstream.redis_server import RedisServer, free_port

from images import encode, photo
from service import service_env, start, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PNG = encode(photo(96, 64), "png")
STREAMS = 250
POOL = 8
KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"


@dataclass
class Api:
    url: str
    env: dict[str, str]
    prefix: str
    log: Path
    process: subprocess.Popen[bytes]
    redis: redis.Redis

    def submit(self, key: str | None = None) -> str:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(
            f"{self.url}/api/jobs",
            files={"image": ("p.png", PNG)},
            data={"operation": "grayscale"},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def channel(self, job_id: str) -> str:
        return "{" + self.prefix + "}:job:" + job_id


def launch(redis_server: RedisServer, root: Path, **extra: str) -> Api:
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(redis_server.url, root / "data", prefix, IMGSTREAM_PORT=str(port), **extra)
    log = root / f"api-{prefix}.log"
    process = start(["api"], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, process)
    return Api(url, env, prefix, log, process, redis.Redis.from_url(redis_server.url))


@pytest.fixture
def api(redis_server: RedisServer, tmp_path: Path) -> Iterator[Api]:
    running = launch(
        redis_server,
        tmp_path,
        IMGSTREAM_REDIS_MAX_CONNECTIONS=str(POOL),
        IMGSTREAM_MAX_STREAMS_PER_CLIENT=str(STREAMS),
        IMGSTREAM_SSE_KEEPALIVE="0.5",
        # 250 streams opening at once queue for the 8 connections; on a loaded machine that
        # queue may take longer than the default 1 s wait, which would answer 503 busy.
        IMGSTREAM_REDIS_POOL_WAIT="60",
    )
    yield running
    running.redis.close()
    assert stop(running.process) == 0, running.log.read_text()[-3000:]


async def statuses(response: httpx.Response, first: anyio.Event) -> list[str]:
    """The status of every ``status`` event, until the server ends the stream."""
    seen = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            seen.append(json.loads(line.removeprefix("data:"))["status"])
            first.set()
    return seen


async def test_hundreds_of_streams_share_one_subscription_and_all_end_done(
    api: Api, tmp_path: Path
) -> None:
    job_id = api.submit()
    before = int(api.redis.info("clients")["connected_clients"])
    results: list[list[str]] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    workers = None
    async with httpx.AsyncClient(base_url=api.url, timeout=120, limits=limits) as client:

        async def follow(opened: anyio.Event) -> None:
            async with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
                assert response.status_code == 200, await response.aread()
                results.append(await statuses(response, opened))

        try:
            async with anyio.create_task_group() as group:
                opened = [anyio.Event() for _ in range(STREAMS)]
                for event in opened:
                    group.start_soon(follow, event)
                for event in opened:
                    await event.wait()
                # Every stream is open: one subscription, and the pool's connections at most.
                reply: Any = api.redis.execute_command("PUBSUB", "NUMSUB", api.channel(job_id))
                assert int(reply[1]) == 1
                during = int(api.redis.info("clients")["connected_clients"])
                assert during - before <= POOL, (before, during)
                other = await client.get(f"/api/jobs/{job_id}")
                assert other.status_code == 200 and other.json()["status"] == "queued"
                workers = start(["worker", "--concurrency", "1"], api.env, api.log)
        finally:
            if workers is not None:
                assert stop(workers) == 0
    assert len(results) == STREAMS
    assert all(seen[0] == "queued" and seen[-1] == "done" for seen in results), results[:3]


async def test_a_missed_announcement_still_ends_the_stream_with_the_final_status(
    api: Api,
) -> None:
    job_id = api.submit()
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=60) as client,
        client.stream("GET", f"/api/jobs/{job_id}/events") as response,
        anyio.create_task_group() as group,
    ):
        opened = anyio.Event()

        async def read() -> None:
            seen.extend(await statuses(response, opened))

        group.start_soon(read)
        await opened.wait()
        # The job ends without an announcement (as if pub/sub had dropped it).
        api.redis.hset(api.channel(job_id), mapping={"status": "failed", "error": "x"})
    assert seen == ["queued", "failed"]


async def test_stream_caps_per_client_and_per_process(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    api = launch(
        redis_server,
        tmp_path,
        IMGSTREAM_API_KEYS=f"{KEY_A},{KEY_B}",
        IMGSTREAM_MAX_STREAMS_PER_CLIENT="3",
        IMGSTREAM_MAX_STREAMS="5",
    )
    try:
        jobs = {key: api.submit(key) for key in (KEY_A, KEY_B)}
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=60) as a,
            httpx.AsyncClient(base_url=api.url, timeout=60) as b,
            anyio.create_task_group() as group,
        ):
            a.headers["Authorization"] = f"Bearer {KEY_A}"
            b.headers["Authorization"] = f"Bearer {KEY_B}"
            release = anyio.Event()

            async def hold(client: httpx.AsyncClient, job_id: str, opened: anyio.Event) -> None:
                async with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
                    assert response.status_code == 200
                    lines = response.aiter_lines()  # held: dropping it would close the stream
                    await anext(lines)
                    opened.set()
                    await release.wait()

            async def open_streams(client: httpx.AsyncClient, job_id: str, count: int) -> None:
                for _ in range(count):
                    opened = anyio.Event()
                    group.start_soon(hold, client, job_id, opened)
                    await opened.wait()

            await open_streams(a, jobs[KEY_A], 3)
            refused = await a.get(f"/api/jobs/{jobs[KEY_A]}/events")
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert "IMGSTREAM_MAX_STREAMS_PER_CLIENT" in refused.json()["error"]["message"]
            assert refused.headers["retry-after"]
            await open_streams(b, jobs[KEY_B], 2)
            full = await b.get(f"/api/jobs/{jobs[KEY_B]}/events")
            assert full.status_code == 503, full.text
            assert "IMGSTREAM_MAX_STREAMS" in full.json()["error"]["message"]
            assert full.headers["retry-after"]
            release.set()
    finally:
        api.redis.close()
        assert stop(api.process) == 0
