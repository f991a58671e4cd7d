"""What counts as Redis trouble and what clients are told: the pure rules of ``redis_health``."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from imgstream.redis_health import (
    POOL_EXHAUSTED,
    describe,
    eviction_problem,
    info_problem,
    is_outage,
    refusal,
)

HEALTHY = {
    "loading": 0,
    "role": "master",
    "rdb_last_bgsave_status": "ok",
    "aof_last_write_status": "ok",
    "maxmemory_policy": "noeviction",
    "used_memory": 1000,
    "maxmemory": 0,
}


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), "out of memory"),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), "persist"),
        (ReadOnlyError("You can't write against a read only replica."), "read-only"),
        (BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
        (ResponseError("BUSY Redis is busy running a script"), "busy"),
    ],
)
def test_refusals_are_outages_with_a_cause(error: Exception, cause: str) -> None:
    found = refusal(error)
    assert found is not None and cause in found
    assert is_outage(error)
    code, message = describe(error)
    assert code == "unavailable" and cause in message


def test_bugs_are_not_outages() -> None:
    for error in (ResponseError("WRONGTYPE Operation against a key"), ValueError("x")):
        assert refusal(error) is None and not is_outage(error)
    assert is_outage(RedisTimeoutError("Timeout reading"))
    assert describe(RedisConnectionError(POOL_EXHAUSTED))[0] == "busy"
    assert describe(RedisConnectionError("Connection refused"))[0] == "unavailable"


def test_only_noeviction_is_safe_unless_allowed() -> None:
    assert eviction_problem("noeviction", allowed=False) is None
    for policy in ("allkeys-lru", "volatile-ttl", "allkeys-random"):
        problem = eviction_problem(policy, allowed=False)
        assert problem is not None and "maxmemory-policy" in problem and policy in problem
        assert eviction_problem(policy, allowed=True) is None


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({}, None),
        ({"loading": 1}, "loading"),
        ({"role": "slave", "slave_read_only": 1}, "read-only"),
        ({"rdb_last_bgsave_status": "err"}, "persist"),
        ({"aof_last_write_status": "err"}, "persist"),
        ({"maxmemory_policy": "allkeys-lru"}, "maxmemory-policy"),
        ({"maxmemory": 1000}, "out of memory"),
        ({"maxmemory": 2000}, None),
    ],
)
def test_info_problems(change: dict[str, object], cause: str | None) -> None:
    problem = info_problem(HEALTHY | change, allow_eviction=False)
    if cause is None:
        assert problem is None
    else:
        assert problem is not None and cause in problem
