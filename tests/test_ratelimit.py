"""Rate limits in Redis: the token bucket, the 429 answer, two API instances sharing buckets."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.client import Client
from imgstream.config import Settings
from imgstream.ratelimit import RateLimiter
from imgstream.redis_server import RedisServer, free_port

from images import encode, photo
from inprocess import assert_error, client_for
from service import Service, service_env, start, stop, wait_until_healthy

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"


def limiter(redis: Redis, settings: Settings, per_second: float, burst: int) -> RateLimiter:
    return RateLimiter(redis, settings.key_prefix, per_second=per_second, burst=burst)


@pytest.mark.anyio
async def test_bucket_allows_the_burst_then_says_how_long_to_wait(
    redis: Redis, settings: Settings
) -> None:
    # A token every 1000 s: however slowly the takes run, none comes back during the test.
    bucket = limiter(redis, settings, per_second=0.001, burst=3)
    assert [await bucket.take("ip:192.0.2.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await bucket.take("ip:192.0.2.1")
    assert 900 < wait <= 1000  # the time until the next token
    assert await bucket.take("ip:192.0.2.2") == 0.0  # another client has its own bucket
    ttl = await redis.pttl(bucket.key("ip:192.0.2.1"))
    assert 0 < ttl <= 3 * 1_000_000 + 1000  # gone once it would be full again
    assert bucket.key("x").startswith("{" + settings.key_prefix + "}:")


@pytest.mark.anyio
async def test_bucket_refills_with_time(redis: Redis, settings: Settings) -> None:
    bucket = limiter(redis, settings, per_second=4, burst=1)
    assert await bucket.take("c") == 0.0
    wait = await bucket.take("c")
    assert wait <= 0.25  # at most a token's time; 0 if the machine paused for longer
    await anyio.sleep(0.3)  # more than a token's time, by construction
    assert await bucket.take("c") == 0.0


def png_upload(seed: int = 0) -> dict[str, tuple[str, bytes]]:
    return {"image": ("a.png", encode(photo(8, 8, seed=seed), "png"))}


@pytest.mark.anyio
async def test_creating_work_draws_on_the_bucket_and_reads_never_do(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 2})
    async with client_for(create_app(tight)) as client:
        job = "/api/jobs/" + "0" * 32
        accepted = [
            await client.post("/api/jobs", files=png_upload(seed), data={"operation": "grayscale"})
            for seed in range(2)  # two images: each its original
        ]
        assert [answer.status_code for answer in accepted] == [202, 202]
        limited = await client.post(
            "/api/jobs", files=png_upload(), data={"operation": "grayscale"}
        )
        assert "IMGSTREAM_RATE_LIMIT_PER_SECOND" in assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 100
        assert limited.headers["x-content-type-options"] == "nosniff"
        assert len(list((tight.data_dir / "originals").iterdir())) == 2  # the refused one: none
        retry = await client.post("/api/dead-letters/0-1/retry")
        assert_error(retry, 429, "rate_limited")  # it creates work too
        reads = [job, accepted[0].json()["links"]["self"], "/api/stats", "/api/limits"]
        statuses = {(await client.get(reads[i % 4])).status_code for i in range(400)}
        assert statuses == {200, 404}  # the bucket is empty, and no read is ever refused
        for path in ("/healthz", "/"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # no worker runs; never a 429


@pytest.mark.anyio
async def test_reads_have_their_own_bucket_when_the_operator_asks(settings: Settings) -> None:
    reads_limited = settings.model_copy(
        update={"read_rate_limit_per_second": 0.01, "read_rate_limit_burst": 3}
    )
    async with client_for(create_app(reads_limited)) as client:
        job = "/api/jobs/" + "0" * 32
        assert [(await client.get(job)).status_code for _ in range(3)] == [404, 404, 404]
        limited = await client.get(job)
        assert "IMGSTREAM_READ_RATE_LIMIT_PER_SECOND" in assert_error(limited, 429, "rate_limited")
        upload = await client.post("/api/jobs", files=png_upload(), data={"operation": "grayscale"})
        assert upload.status_code == 202  # creating work has its own bucket, still full


@pytest.mark.anyio
async def test_a_wrong_key_draws_on_its_ip_bucket_whatever_it_asks(settings: Settings) -> None:
    keyed = settings.model_copy(
        update={
            "api_keys": (SecretStr(KEY_A),),
            "rate_limit_per_second": 0.01,
            "rate_limit_burst": 2,
        }
    )
    async with client_for(create_app(keyed)) as client:
        wrong = {"Authorization": "Bearer " + "x" * 24}
        right = {"Authorization": f"Bearer {KEY_A}"}
        guesses = [(await client.get("/api/stats", headers=wrong)).status_code for _ in range(3)]
        assert guesses == [401, 401, 429]
        assert (await client.get("/api/stats")).status_code == 401  # no key: a read, not a guess
        assert (await client.get("/api/stats", headers=right)).status_code == 200


@pytest.mark.anyio
async def test_rate_limit_off_when_rate_is_zero(settings: Settings) -> None:
    off = settings.model_copy(update={"rate_limit_per_second": 0.0, "rate_limit_burst": 1})
    async with client_for(create_app(off)) as client:
        statuses = {(await client.get("/api/jobs/" + "0" * 32)).status_code for _ in range(5)}
    assert statuses == {404}


# Two API processes, one Redis.


def two_apis(
    redis_server: RedisServer, tmp_path: Path, prefix: str, **extra: str
) -> Iterator[tuple[str, str]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    processes, urls = [], []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = service_env(redis_server.url, data_dir, prefix, IMGSTREAM_PORT=str(port), **extra)
            process = start(["api"], env, tmp_path / f"api-{name}.log")
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until_healthy(url, process)
        yield urls[0], urls[1]
    finally:
        for process in processes:
            stop(process)


@pytest.fixture
def keyed_apis(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from two_apis(
        redis_server,
        tmp_path,
        f"two-{uuid.uuid4().hex[:8]}",
        IMGSTREAM_API_KEYS=f"{KEY_A},{KEY_B}",
        IMGSTREAM_RATE_LIMIT_PER_SECOND="0.01",
        IMGSTREAM_RATE_LIMIT_BURST="6",
        IMGSTREAM_READ_RATE_LIMIT_PER_SECOND="0.01",
        IMGSTREAM_READ_RATE_LIMIT_BURST="5",
    )


@pytest.mark.slow
def test_two_api_instances_share_keys_jobs_and_buckets(keyed_apis: tuple[str, str]) -> None:
    a, b = keyed_apis
    with httpx.Client(timeout=10) as http:
        auth_a, auth_b = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}
        accepted = http.post(
            f"{a}/api/jobs",
            files={"image": ("a.png", encode(photo(16, 16), "png"))},
            data={"operation": "grayscale"},
            headers=auth_a,
        )
        assert accepted.status_code == 202, accepted.text  # key A's jobs: 1 of 6
        job = f"/api/jobs/{accepted.json()['id']}"
        assert http.get(f"{b}{job}", headers=auth_a).status_code == 200  # A's reads: 1 of 5
        assert http.get(f"{b}{job}", headers=auth_b).status_code == 404  # key B: 1 of 5
        assert http.get(f"{a}{job}").status_code == 401  # no key: the client IP's bucket

        statuses = [http.get(f"{(a, b)[i % 2]}{job}", headers=auth_a).status_code for i in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]  # 2..5 allowed, then both refuse
        limited = http.get(f"{a}{job}", headers=auth_a)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get(f"{a}{job}", headers=auth_b).status_code == 404  # B's bucket is its own


@pytest.fixture
def open_apis(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from two_apis(
        redis_server,
        tmp_path,
        f"two-{uuid.uuid4().hex[:8]}",
        IMGSTREAM_READ_RATE_LIMIT_PER_SECOND="0.01",
        IMGSTREAM_READ_RATE_LIMIT_BURST="4",
    )


@pytest.mark.slow
def test_without_keys_the_bucket_is_per_client_ip_across_instances(
    open_apis: tuple[str, str],
) -> None:
    a, b = open_apis
    missing = "/api/jobs/" + "0" * 32
    with httpx.Client(timeout=10) as http:
        statuses = [http.get(f"{(a, b)[i % 2]}{missing}").status_code for i in range(6)]
        assert statuses == [404, 404, 404, 404, 429, 429]
        assert http.get(f"{b}/healthz").status_code == 200


@pytest.fixture
def default_limits(redis_server: RedisServer, tmp_path: Path) -> Iterator[Service]:
    """A service with the rate limits at their defaults (the test helpers turn them off)."""
    defaults = Settings.model_fields
    running = Service.launch(
        redis_server.url,
        tmp_path / "data",
        f"rl-{uuid.uuid4().hex[:8]}",
        IMGSTREAM_RATE_LIMIT_PER_SECOND=str(defaults["rate_limit_per_second"].default),
        IMGSTREAM_RATE_LIMIT_BURST=str(defaults["rate_limit_burst"].default),
    )
    yield running
    running.close()


@pytest.mark.slow
def test_a_backend_uploading_300_images_then_reading_them_never_meets_a_read_429(
    default_limits: Service, tmp_path: Path
) -> None:
    """One address, the defaults: uploads paced by Retry-After, then every read in a burst."""
    service = default_limits
    source = tmp_path / "tiny.png"
    source.write_bytes(encode(photo(16, 16), "png"))
    paced: list[float] = []
    client = Client(service.url, on_retry=lambda _status, pause: paced.append(pause))
    read_statuses: Counter[int] = Counter()
    try:
        jobs = [client.submit(source, {"operation": "grayscale"})["id"] for _ in range(300)]
        assert len(set(jobs)) == 300
        assert all(pause >= 1 for pause in paced)  # each wait was the server's Retry-After
        unfinished, deadline = set(jobs), time.monotonic() + 120
        while unfinished:
            assert time.monotonic() < deadline, f"{len(unfinished)} jobs never ended"
            for job_id in sorted(unfinished):
                answer = client.http.get(f"/api/jobs/{job_id}")
                read_statuses[answer.status_code] += 1
                if answer.status_code == 200 and answer.json()["status"] in ("done", "failed"):
                    unfinished.discard(job_id)
        for job_id in jobs:  # the burst: every status, result and event stream, back to back
            for path in ("", "/result", "/events"):
                read_statuses[client.http.get(f"/api/jobs/{job_id}{path}").status_code] += 1
        read_statuses[client.http.get("/api/stats").status_code] += 1
    finally:
        client.close()
    assert set(read_statuses) == {200}, read_statuses
