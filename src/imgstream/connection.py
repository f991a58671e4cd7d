"""Connecting to Redis and loading the Lua scripts, the same way in every process.

A script's source is read from the package once per process, however many clients or
objects register it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


async def run_replicated(
    redis: Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """Run ``script`` and then ``WAIT replicas timeout_ms`` on the same connection; returns
    the script's reply and how many replicas acknowledged its writes.

    ``WAIT`` counts the writes of the connection it is sent on, so both go in one
    non-transactional pipeline; on a cluster, on a connection of the master owning
    ``keys[0]``'s slot (each script's keys share one slot). A lost ``WAIT`` reply (the master
    died after the script) counts as no acknowledgement; a lost script reply raises.
    """
    command = ("EVALSHA", script.sha, len(keys), *keys, *args)
    for _ in range(3):
        reply, acked = await _on_one_connection(
            redis, keys[0], [command, ("WAIT", replicas, timeout_ms)]
        )
        if isinstance(reply, NoScriptError):  # a new master (a promoted replica) lacks it
            await redis.script_load(script.script)
        elif not isinstance(reply, AskError):  # MOVED/ASK: not run; the slots are relearnt
            break
    if isinstance(reply, Exception):
        raise reply
    return reply, acked if isinstance(acked, int) else 0


ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]
"""A script with its keys and arguments."""

_NOT_RUN = (NoScriptError, AskError, TryAgainError, ClusterDownError)
"""Replies meaning the server did not run the command (unknown script, slot moved)."""


async def run_together(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """The replies of ``calls``, scripts whose keys all share one slot, sent in one round
    trip on one connection (a cluster client refuses scripts in its pipelines). A script the
    server did not run (it does not know it yet, or the slot moved meanwhile) is run again
    alone, the usual way, which loads it or follows the redirection; any other error raises."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls]
    replies = await _on_one_connection(redis, calls[0][1][0], commands)
    for index, reply in enumerate(replies):
        if isinstance(reply, _NOT_RUN):
            script, keys, args = calls[index]
            replies[index] = await script(keys=keys, args=args)
        elif isinstance(reply, Exception):
            raise reply
    return replies


async def _on_one_connection(redis: Redis, key: str, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies (or errors) of ``commands`` sent together on one connection."""
    if not isinstance(redis, RedisCluster):
        async with redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
    cluster = cast(RedisCluster, redis)
    queued = [PipelineCommand(index, *command) for index, command in enumerate(commands)]
    moved = (AskError, ClusterDownError, TryAgainError, RedisConnectionError, RedisTimeoutError)
    try:
        await cluster.initialize()  # a no-op once the slots are known
    except RedisClusterException as exc:  # no node reachable
        raise RedisConnectionError(str(exc)) from exc
    try:
        node = cluster.get_node_from_key(key)
    except SlotNotCoveredError:  # a master was lost and no replica is promoted yet
        await _relearn_slots(cluster)
        raise ClusterDownError(f"no master serves the slot of {key} now") from None
    try:
        await node.execute_pipeline(queued)
    except moved:
        await _relearn_slots(cluster)
        raise
    results = [command.result for command in queued]
    if isinstance(results[0], moved):
        await _relearn_slots(cluster)
    return results


async def _relearn_slots(cluster: RedisCluster) -> None:
    """Ask the cluster who owns which slot now (after a failover, a MOVED or a lost node), as
    the cluster client does after its own commands; a cluster still electing answers later."""
    with contextlib.suppress(RedisError, RedisClusterException):
        await cluster.nodes_manager.initialize()


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
    }
    if not url.startswith("unix:"):  # a Unix socket has no TCP keepalive (redis-py refuses it)
        options["socket_keepalive"] = True
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
    client = _Cluster.from_url(url, max_connections=max_connections or 100, **cluster_options)
    return cast(Redis, client)


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose troubles of a failover are Redis errors like any
    outage: a slot no master serves yet is ``CLUSTERDOWN``, no node reachable a lost
    connection. (redis-py raises them outside ``RedisError``, where the API would answer
    ``500`` and a worker would crash instead of waiting.)"""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise ClusterDownError(str(exc)) from exc
        except RedisClusterException as exc:
            if "cannot be connected" not in str(exc):
                raise  # a bug (keys of several slots, say), not an outage
            raise RedisConnectionError(str(exc)) from exc


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
