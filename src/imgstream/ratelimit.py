"""Per-client request rate limits kept in Redis, so every API instance shares the same buckets.

A token bucket per API key, or per client IP when access control is off (and for requests
without a valid key, so guessing keys is limited too): ``IMGSTREAM_RATE_LIMIT_BURST`` requests
at once, refilled at ``IMGSTREAM_RATE_LIMIT_PER_SECOND``. A request over the limit gets ``429``
with ``Retry-After`` before its body is read. Buckets live at ``{<prefix>}:ratelimit:<client>``
(the deployment's hash tag) and expire once full again.

While Redis is unreachable requests pass unlimited: the routes need Redis themselves and answer
``503``, so nothing is let through that the limit was protecting.
"""

from __future__ import annotations

import logging
import math
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from imgstream.auth import KeyRing, header, is_api_path
from imgstream.middleware import send_json_error

log = logging.getLogger("imgstream.ratelimit")


class RateLimiter:
    """Token buckets in Redis: ``take`` says whether a client may go on, or how long to wait."""

    def __init__(self, redis: Redis, prefix: str, *, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self.redis = redis
        self.prefix = prefix
        self.per_second = per_second
        self.burst = burst
        source = resources.files("imgstream").joinpath("lua", "ratelimit.lua").read_text()
        self._take = redis.register_script(source)

    def key(self, client: str) -> str:
        return f"{{{self.prefix}}}:ratelimit:{client}"

    async def take(self, client: str, cost: int = 1) -> float:
        """Take ``cost`` tokens from ``client``'s bucket: 0.0 if taken, else seconds to wait."""
        reply = await self._take(
            keys=[self.key(client)], args=[repr(self.per_second), self.burst, cost]
        )
        taken, wait_ms = int(reply[0]), int(reply[1])
        return 0.0 if taken else max(wait_ms, 1) / 1000


def client_identity(scope: Scope, keyring: KeyRing) -> str:
    """Whose bucket a request draws on: its API key's fingerprint, else its client address."""
    if keyring.enabled:
        caller = keyring.identify(header(scope, b"authorization"))
        if caller is not None:
            return f"key:{caller.owner[:32]}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimit:
    """ASGI middleware: ``429`` with ``Retry-After`` once a client's bucket under ``/api`` is empty.

    The limiter is looked up on the application's state (``rate_limiter``, set at start-up,
    where the Redis client is made); None there means rate limiting is off.
    """

    def __init__(self, app: ASGIApp, *, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RateLimiter | None = None
        if scope["type"] == "http" and is_api_path(scope["path"]):
            limiter = getattr(scope["app"].state, "rate_limiter", None)
        if limiter is None:
            await self.app(scope, receive, send)
            return
        try:
            wait = await limiter.take(client_identity(scope, self.keyring))
        except RedisError as exc:
            log.warning("rate limit not checked, redis unavailable: %s", exc)
            wait = 0.0
        if wait > 0:
            await _refuse(send, wait)
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    await send_json_error(
        send,
        429,
        "rate_limited",
        f"too many requests; try again in {seconds} s (IMGSTREAM_RATE_LIMIT_PER_SECOND)",
        {"retry-after": str(seconds)},
    )
