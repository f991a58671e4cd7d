"""Connecting to Redis and loading the Lua scripts, the same way in every process.

A script's source is read from the package once per process, however many clients or
objects register it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from imgstream.config import Settings


@cache
def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("imgstream").joinpath("lua", f"{name}.lua").read_text()


def server_ms(time_reply: tuple[int, int]) -> int:
    """Redis's clock in ms, from a ``TIME`` reply (seconds, microseconds): the one clock every
    process of a deployment agrees on."""
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def load_script(redis: Redis, name: str) -> AsyncScript:
    """``lua/<name>.lua`` registered on ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(script_source(name))


def connect(
    url: str,
    *,
    timeout: float | None = None,
    max_connections: int | None = None,
    pool_wait: float = 1.0,
    cluster: bool = False,
) -> Redis:
    """A client with the settings this project relies on (text replies, health checks).

    ``timeout`` bounds every command (a frozen Redis is an outage, not a hang); with
    ``max_connections`` the pool is bounded, and a caller finding it full waits ``pool_wait``
    seconds, then gets ``ConnectionError("No connection available.")``.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "protocol": 2,  # the reply shapes below are RESP2's, whatever the client's default
        "health_check_interval": 30,
        "socket_connect_timeout": min(5.0, timeout) if timeout else 5.0,
        "socket_timeout": timeout,
        "socket_keepalive": True,
    }
    if cluster:
        return connect_cluster(url, options, max_connections=max_connections)
    if max_connections is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_wait, **options
    )
    return Redis.from_pool(pool)


def connect_cluster(
    url: str, options: dict[str, Any], *, max_connections: int | None = None
) -> Redis:
    """A Redis Cluster client seeded from the node ``url`` names.

    It is typed as ``Redis``: ``RedisCluster`` offers the same commands, scripts, pipelines
    and pub/sub this project uses (each script and transaction names keys of one slot, see
    ``keys``), and every caller stays one code path. Pub/sub is classic PUBLISH/SUBSCRIBE,
    deliberately: the scripts' PUBLISH reaches every node, so one subscriber connection on
    any node hears every job, whatever its slot (sharded pub/sub would need one per shard).
    """
    cluster_options = {k: v for k, v in options.items() if k != "health_check_interval"}
    client = RedisCluster.from_url(url, max_connections=max_connections or 100, **cluster_options)
    return cast(Redis, client)


def connect_from(settings: Settings, *, blocking_ms: int = 0) -> Redis:
    """The client a process of ``settings`` uses: bounded pool, commands bounded in time
    (``blocking_ms`` more for a process that blocks in XREADGROUP)."""
    return connect(
        settings.effective_redis_url,
        timeout=settings.redis_timeout + blocking_ms / 1000,
        max_connections=settings.redis_max_connections,
        pool_wait=settings.redis_pool_wait,
        cluster=settings.redis_cluster,
    )
