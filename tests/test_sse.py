"""Live status over Server-Sent Events: real API processes, real workers, real Redis pub/sub.

Two API instances share one Redis and one data directory; jobs go in through one and are
followed through the other, so nothing may rest on process memory.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.redis_server import RedisServer, free_port

from images import encode, photo
from service import service_env, start, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PNG = encode(photo(96, 64), "png")


@dataclass
class Cluster:
    """Two API instances (``one`` keeps the default 15 s keep-alive, ``two`` a fast one)."""

    one: str
    two: str
    env: dict[str, str]
    prefix: str
    data_dir: Path
    log: Path
    redis: redis.Redis

    def submit(self, **fields: str) -> str:
        response = httpx.post(
            f"{self.one}/api/jobs", files={"image": ("p.png", PNG)}, data=fields, timeout=30
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def subscribers(self, job_id: str) -> int:
        channel = "{" + self.prefix + "}:job:" + job_id
        reply: Any = self.redis.execute_command("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def start_workers(self) -> subprocess.Popen[bytes]:
        return start(["worker", "--concurrency", "1"], self.env, self.log)


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("events")
    prefix = f"sse-{uuid.uuid4().hex[:8]}"
    env = service_env(redis_server.url, root / "data", prefix)
    log = root / "service.log"
    ports = free_port(), free_port()
    apis = [
        start(["api"], {**env, "IMGSTREAM_PORT": str(ports[0])}, log),
        start(
            ["api"], {**env, "IMGSTREAM_PORT": str(ports[1]), "IMGSTREAM_SSE_KEEPALIVE": "0.3"}, log
        ),
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    client = redis.Redis.from_url(redis_server.url)
    try:
        for url, api in zip(urls, apis, strict=True):
            wait_until_healthy(url, api)
        yield Cluster(urls[0], urls[1], env, prefix, root / "data", log, client)
    finally:
        client.close()
        codes = [stop(api) for api in apis]
    assert codes == [0, 0], log.read_text()[-3000:]


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) per event, and ("comment", text) per comment line, as they come."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line and data:
            yield name, "\n".join(data)
            name, data = "message", []


async def next_status(stream: AsyncIterator[tuple[str, str]]) -> dict[str, Any]:
    async for name, data in stream:
        if name == "status":
            job: dict[str, Any] = json.loads(data)
            return job
        assert name == "comment", (name, data)
    raise AssertionError("the stream ended without another status event")


async def test_status_is_pushed_live_through_another_instance(cluster: Cluster) -> None:
    good = cluster.submit(operations='[{"op":"resize","width":48}]')
    lost = uuid.uuid4().hex  # a producer's job whose original was never stored
    cluster.redis.hset(
        "{" + cluster.prefix + "}:job:" + lost,
        mapping={"status": "queued", "operations": '[{"op":"grayscale"}]', "attempts": "0"},
    )
    cluster.redis.xadd(
        "{" + cluster.prefix + "}:jobs", {"job": lost, "operations": '[{"op":"grayscale"}]'}
    )
    seen: dict[str, list[dict[str, Any]]] = {good: [], lost: []}
    workers = None
    async with httpx.AsyncClient(base_url=cluster.two, timeout=30) as two:

        async def follow(job_id: str, first_seen: anyio.Event) -> None:
            async with two.stream("GET", f"/api/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                async for name, data in events(response):
                    if name == "status":
                        seen[job_id].append(json.loads(data))
                        first_seen.set()
            # the server ended the stream by itself, after the final state

        try:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    ready = [anyio.Event(), anyio.Event()]
                    group.start_soon(follow, good, ready[0])
                    group.start_soon(follow, lost, ready[1])
                    for event in ready:
                        await event.wait()
                    workers = cluster.start_workers()
        finally:
            if workers is not None:
                assert stop(workers) == 0

    async with httpx.AsyncClient(base_url=cluster.one, timeout=30) as one:
        for job_id, outcome in ((good, "done"), (lost, "failed")):
            statuses = [job["status"] for job in seen[job_id]]
            assert statuses[0] == "queued" and statuses[-1] == outcome, statuses
            assert statuses in (["queued", "processing", outcome], ["queued", outcome])
            assert seen[job_id][-1] == (await one.get(f"/api/jobs/{job_id}")).json()

            # A finished job: its state once, then the end of the stream.
            again = await one.get(f"/api/jobs/{job_id}/events")
            assert again.status_code == 200
            sent = [item async for item in events(again)]
            assert [name for name, _ in sent] == ["status"]
            assert json.loads(sent[0][1]) == seen[job_id][-1]

    assert seen[good][-1]["result"]["width"] == 48
    assert seen[lost][-1]["error_code"] == "original_missing"


async def test_keep_alive_comments_while_nothing_changes(cluster: Cluster) -> None:
    job_id = cluster.submit(operation="grayscale")  # no worker runs: it stays queued
    async with (
        httpx.AsyncClient(base_url=cluster.two, timeout=10) as two,
        two.stream("GET", f"/api/jobs/{job_id}/events") as response,
    ):
        stream = events(response)
        assert (await next_status(stream))["status"] == "queued"
        comments = 0
        with anyio.fail_after(5):
            async for name, data in stream:
                assert (name, data) == ("comment", "keep-alive")
                comments += 1
                if comments == 3:
                    break


async def test_a_client_leaving_drops_its_subscription_at_once(cluster: Cluster) -> None:
    """Instance ``one`` writes only every 15 s: the subscription must go with the client."""
    job_id = cluster.submit(operation="grayscale")
    assert cluster.subscribers(job_id) == 0
    async with (
        httpx.AsyncClient(base_url=cluster.one, timeout=10) as one,
        one.stream("GET", f"/api/jobs/{job_id}/events") as response,
    ):
        assert (await next_status(events(response)))["status"] == "queued"
        assert cluster.subscribers(job_id) == 1
    for _ in range(60):  # Redis is polled: nothing else can tell when it drops a subscriber
        if cluster.subscribers(job_id) == 0:
            break
        await anyio.sleep(0.05)
    assert cluster.subscribers(job_id) == 0, "the subscription outlived its client"


async def test_unknown_and_malformed_ids_answer_404(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.two, timeout=10) as two:
        for path in ("0" * 32, "not-an-id", "..%2F..%2Fetc", "A" * 32):
            response = await two.get(f"/api/jobs/{path}/events")
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "not_found"
            assert response.headers["content-type"] == "application/json"


async def test_redis_unreachable_answers_503(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(nowhere)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(f"/api/jobs/{'a' * 32}/events")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["retry-after"]


async def test_the_route_is_in_the_openapi_schema(settings: Settings) -> None:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        schema = (await client.get("/openapi.json")).json()
    answers = schema["paths"]["/api/jobs/{job_id}/events"]["get"]["responses"]
    assert answers["200"]["content"] == {"text/event-stream": {}}
    assert {"404", "503"} <= set(answers)
