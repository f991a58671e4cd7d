"""What counts as Redis trouble, and what to tell people about it: pure functions, no I/O.

A lost connection is not the only outage. A Redis out of memory under ``noeviction``
(``OOM``), unable to persist (``MISCONF``), a read-only replica (``READONLY``), one still
loading its data (``LOADING``) or stuck in a script (``BUSY``) refuses commands just as
surely; every part treats them like an unreachable Redis: the API answers ``503`` with the
cause, workers wait with their work in hand. And a Redis whose ``maxmemory-policy`` may
evict keys silently loses accepted jobs, so nothing runs against one unless the operator
says so (``IMGSTREAM_ALLOW_EVICTION=true``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REFUSALS: Final = {
    "OOM": "Redis is out of memory (maxmemory reached under noeviction)",
    "MISCONF": "Redis cannot persist its data and refuses writes (MISCONF)",
    "READONLY": "Redis is a read-only replica",
    "LOADING": "Redis is loading its data",
    "BUSY": "Redis is busy running a script",
    "MASTERDOWN": "Redis lost its primary",
    "NOREPLICAS": "Redis has too few replicas to accept writes",
    "CLUSTERDOWN": "the Redis Cluster is down or electing a new master",
    "TRYAGAIN": "the Redis Cluster is moving the keys asked for",
}
"""Error prefixes that mean "Redis cannot serve now", with what to say about each."""

SAFE_POLICY: Final = "noeviction"
POOL_EXHAUSTED: Final = "No connection available."


def refusal(exc: BaseException) -> str | None:
    """What a Redis error reply means when it is an outage rather than a bug, else None."""
    # redis-py turns some prefixes into classes (and drops the prefix from the message).
    for kind, prefix in ((BusyLoadingError, "LOADING"), (OutOfMemoryError, "OOM"),
                         (ReadOnlyError, "READONLY"), (ClusterDownError, "CLUSTERDOWN"),
                         (TryAgainError, "TRYAGAIN")):  # fmt: skip
        if isinstance(exc, kind):
            return REFUSALS[prefix]
    if isinstance(exc, ResponseError):
        prefix = str(exc).split(" ", 1)[0].upper()
        return REFUSALS.get(prefix)
    return None


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot serve now (so: wait, or answer 503)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) or refusal(exc) is not None


def describe(exc: BaseException) -> tuple[str, str]:
    """(code, message) for a client told about an outage."""
    if isinstance(exc, RedisConnectionError) and str(exc) == POOL_EXHAUSTED:
        return "busy", "the server is busy (every Redis connection is in use); try again shortly"
    cause = refusal(exc)
    if cause is not None:
        return "unavailable", f"the job store cannot serve now: {cause}; try again shortly"
    return "unavailable", "the job store is unreachable; try again shortly"


def eviction_problem(policy: str, *, allowed: bool) -> str | None:
    """Why running against a Redis with this ``maxmemory-policy`` is refused, or None."""
    if allowed or not policy or policy == SAFE_POLICY:
        return None
    return (
        f"Redis maxmemory-policy is {policy}: it may evict imgstream's keys and lose accepted "
        f"jobs; set maxmemory-policy {SAFE_POLICY} (or IMGSTREAM_ALLOW_EVICTION=true)"
    )


def info_problem(info: Mapping[str, Any], *, allow_eviction: bool) -> str | None:
    """What keeps Redis, as its ``INFO`` shows it, from taking jobs now; None when fine."""
    if str(info.get("loading", "0")) == "1":
        return REFUSALS["LOADING"]
    if info.get("role") in ("slave", "replica") and str(info.get("slave_read_only", "1")) == "1":
        return REFUSALS["READONLY"]
    if "err" in (info.get("rdb_last_bgsave_status"), info.get("aof_last_write_status")):
        return "Redis failed to persist its data (it may refuse writes: MISCONF)"
    evicting = eviction_problem(str(info.get("maxmemory_policy", "")), allowed=allow_eviction)
    if evicting:
        return evicting
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if limit and used >= limit and info.get("maxmemory_policy") == SAFE_POLICY:
        return f"{REFUSALS['OOM']}: {used} of {limit} bytes used"
    return None


INFO_SECTIONS: Final = ("memory", "persistence", "replication")
"""The ``INFO`` sections ``info_problem`` reads."""
