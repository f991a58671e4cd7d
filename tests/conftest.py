"""Shared fixtures: a private redis-server per test session, isolated settings per test, and
an in-process client of the app.

Tests never talk to a server they did not start. Each test gets its own key prefix and data
directory, so nothing needs flushing and tests cannot see each other's jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.connection import connect
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer
from imgstream.setting_values import StorageKind
from redis_cluster import RedisCluster
from seaweed import SeaweedS3

from inprocess import client_for


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real S3 server (SeaweedFS) for the session; tests make buckets of their own."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_settings(
    settings: Settings, seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """``settings`` with S3 storage on a fresh bucket of ``seaweed``; the credentials come
    from the standard AWS environment variables, as in production."""
    for name, value in seaweed.client_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return settings.model_copy(
        update={
            "storage": StorageKind.S3,
            "s3_bucket": seaweed.new_bucket(),
            "s3_endpoint_url": seaweed.endpoint,
            "s3_prefix": "fleet/",
        }
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        key_prefix=f"test-{uuid.uuid4().hex[:12]}",
        concurrency=1,
        block_ms=50,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect(settings.effective_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def queue(redis: Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis, Keys(settings.key_prefix), settings.group)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app of ``settings``, in-process, its lifespan run around use."""
    async with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on free loopback ports, for the whole session."""
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster
