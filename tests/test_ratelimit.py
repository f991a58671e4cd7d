"""Rate limits in Redis: the token bucket, the 429 answer, two API instances sharing buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.ratelimit import RateLimiter
from imgstream.redis_server import RedisServer, free_port

from images import encode, photo
from inprocess import assert_error, client_for
from service import service_env, start, stop, wait_until_healthy

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"


def limiter(redis: Redis, settings: Settings, per_second: float, burst: int) -> RateLimiter:
    return RateLimiter(redis, settings.key_prefix, per_second=per_second, burst=burst)


@pytest.mark.anyio
async def test_bucket_allows_the_burst_then_says_how_long_to_wait(
    redis: Redis, settings: Settings
) -> None:
    bucket = limiter(redis, settings, per_second=0.5, burst=3)
    assert [await bucket.take("ip:192.0.2.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await bucket.take("ip:192.0.2.1")
    assert 1.0 < wait <= 2.0  # one token comes back every 2 s
    assert await bucket.take("ip:192.0.2.2") == 0.0  # another client has its own bucket
    ttl = await redis.pttl(bucket.key("ip:192.0.2.1"))
    assert 0 < ttl <= 3 * 2000 + 1000  # gone once it would be full again
    assert bucket.key("x").startswith("{" + settings.key_prefix + "}:")


@pytest.mark.anyio
async def test_bucket_refills_with_time(redis: Redis, settings: Settings) -> None:
    bucket = limiter(redis, settings, per_second=4, burst=1)
    assert await bucket.take("c") == 0.0
    wait = await bucket.take("c")
    assert 0 < wait <= 0.25
    await anyio.sleep(wait + 0.02)
    assert await bucket.take("c") == 0.0


@pytest.mark.anyio
async def test_api_answers_429_with_retry_after_and_only_under_api(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 2})
    async with client_for(create_app(tight)) as client:
        job = "/api/jobs/" + "0" * 32
        assert [(await client.get(job)).status_code for _ in range(2)] == [404, 404]
        limited = await client.get(job)
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 100
        assert limited.headers["x-content-type-options"] == "nosniff"
        refused_upload = await client.post(
            "/api/jobs",
            files={"image": ("a.png", encode(photo(8, 8), "png"))},
            data={"operation": "grayscale"},
        )
        assert_error(refused_upload, 429)
        assert not any((tight.data_dir / "originals").iterdir())
        for path in ("/healthz", "/"):
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # no worker runs; never a 429


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
        assert accepted.status_code == 202, accepted.text  # key A: 1 of 6
        job = f"/api/jobs/{accepted.json()['id']}"
        assert http.get(f"{b}{job}", headers=auth_a).status_code == 200  # 2: seen through B
        assert http.get(f"{b}{job}", headers=auth_b).status_code == 404  # key B: 1 of 6
        assert http.get(f"{a}{job}").status_code == 401  # no key: the client IP's bucket

        statuses = [http.get(f"{(a, b)[i % 2]}{job}", headers=auth_a).status_code for i in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]  # 3..6 allowed, then both refuse
        limited = http.get(f"{a}{job}", headers=auth_a)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get(f"{a}{job}", headers=auth_b).status_code == 404  # B's bucket is its own


@pytest.fixture
def open_apis(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from two_apis(
        redis_server,
        tmp_path,
        f"two-{uuid.uuid4().hex[:8]}",
        IMGSTREAM_RATE_LIMIT_PER_SECOND="0.01",
        IMGSTREAM_RATE_LIMIT_BURST="4",
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
