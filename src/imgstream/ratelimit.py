"""Per-client request rate limits kept in Redis, so every API instance shares the same buckets.

What costs is limited, what is cheap is not: every request under ``/api`` that creates work
(a ``POST``: a job, a dead letter's retry) draws on its client's bucket,
``IMGSTREAM_RATE_LIMIT_BURST`` at once, refilled at ``IMGSTREAM_RATE_LIMIT_PER_SECOND``.
Reads (status, result, events, stats, limits) are never throttled at the defaults, so the
page and a backend polling its jobs never meet a ``429``; an operator may give them a bucket
of their own, much larger, with ``IMGSTREAM_READ_RATE_LIMIT_PER_SECOND`` (off by default).
A client is its API key, or its IP when access control is off; a request presenting a wrong
key draws on its IP's bucket for creation, whatever it asks, so guessing keys is limited too.

A request over the limit gets ``429`` with ``Retry-After`` before its body is read. Buckets
live at ``{<prefix>}:ratelimit:<client>`` and ``{<prefix>}:ratelimit:read:<client>`` (the
deployment's hash tag) and expire once full again.

The limit never fails open: while Redis is unreachable (or refuses, or the connection pool
is full) a request that should draw on a bucket gets ``503`` with ``Retry-After`` instead.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from starlette.datastructures import Headers, State
from starlette.types import Scope

from imgstream.auth import KeyRing
from imgstream.config import Settings
from imgstream.connection import load_script
from imgstream.keys import Keys

log = logging.getLogger("imgstream.ratelimit")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that only read: they never draw on the bucket of work created."""


class RateLimiter:
    """Token buckets in Redis: ``take`` says whether a client may go on, or how long to wait.

    ``kind`` names the buckets ("" for work created, "read" for reads) and ``setting`` the
    rate a refusal quotes.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        per_second: float,
        burst: int,
        kind: str = "",
        setting: str = "IMGSTREAM_RATE_LIMIT_PER_SECOND",
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self.redis = redis
        self.prefix = prefix
        self.per_second = per_second
        self.burst = burst
        self.kind = kind
        self.setting = setting
        self._take = load_script(redis, "ratelimit")

    def key(self, client: str) -> str:
        return Keys(self.prefix).rate_limit(client, self.kind)

    async def take(self, client: str, cost: int = 1) -> float:
        """Take ``cost`` tokens from ``client``'s bucket: 0.0 if taken, else seconds to wait."""
        reply = await self._take(
            keys=[self.key(client)], args=[repr(self.per_second), self.burst, cost]
        )
        taken, wait_ms = int(reply[0]), int(reply[1])
        return 0.0 if taken else max(wait_ms, 1) / 1000


def install_limiters(state: State, settings: Settings, redis: Redis) -> None:
    """Put the limiters ``settings`` ask for on the application's state (None: off)."""
    state.rate_limiter = None
    state.read_rate_limiter = None
    if settings.rate_limited:
        state.rate_limiter = RateLimiter(
            redis,
            settings.key_prefix,
            per_second=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
    if settings.read_rate_limit_per_second > 0:
        state.read_rate_limiter = RateLimiter(
            redis,
            settings.key_prefix,
            per_second=settings.read_rate_limit_per_second,
            burst=settings.read_rate_limit_burst,
            kind="read",
            setting="IMGSTREAM_READ_RATE_LIMIT_PER_SECOND",
        )


def client_identity(scope: Scope, keyring: KeyRing) -> str:
    """Whose bucket a request draws on: its API key's fingerprint, else its client address."""
    if keyring.enabled:
        caller = keyring.identify(Headers(scope=scope).get("authorization"))
        if caller is not None:
            return f"key:{caller.owner[:32]}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def limiter_for(scope: Scope, keyring: KeyRing) -> RateLimiter | None:
    """The bucket kind a request draws on: reads their own (if any), everything else and
    every wrong key the bucket of work created."""
    state = scope["app"].state
    guessing = (
        keyring.enabled
        and Headers(scope=scope).get("authorization") is not None
        and keyring.identify(Headers(scope=scope).get("authorization")) is None
    )
    if scope["method"] in SAFE_METHODS and not guessing:
        return getattr(state, "read_rate_limiter", None)
    return getattr(state, "rate_limiter", None)


async def take_more(scope: Scope, keyring: KeyRing, tokens: int) -> float:
    """Draw ``tokens`` more from the bucket of work created, for a request found to create
    more than one job (a batch, once its form is read): 0.0 if taken (or the limit is off),
    else seconds to wait, and then the request's own token is given back, so that a client
    waiting as told does get through. At most what a full bucket still holds after the
    request's own token, so that a batch within the limits can always pass."""
    limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
    if limiter is None or tokens <= 0 or limiter.burst <= 1:
        return 0.0
    client = client_identity(scope, keyring)
    wait = await limiter.take(client, min(tokens, limiter.burst - 1))
    if wait > 0:
        await limiter.take(client, -1)  # a negative cost puts back (the bucket stays capped)
    return wait
