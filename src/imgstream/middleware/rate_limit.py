"""Per-client rate limits at the door: ``429`` (or ``503`` while Redis cannot say) before a
request's body is read; the buckets themselves are ``ratelimit``'s."""

from __future__ import annotations

import logging
import math

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from imgstream.auth import KeyRing, is_api_path
from imgstream.errors import RETRY_AFTER_MOMENT, error_response, retry_after
from imgstream.ratelimit import RateLimiter, client_identity, limiter_for
from imgstream.redis_health import describe

log = logging.getLogger("imgstream.ratelimit")


class RateLimit:
    """ASGI middleware: ``429`` with ``Retry-After`` once a client's bucket under ``/api`` is empty.

    The limiters are looked up on the application's state (``install_limiters``, called at
    start-up, where the Redis client is made); None there means that kind is not limited.
    """

    def __init__(self, app: ASGIApp, *, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RateLimiter | None = None
        if scope["type"] == "http" and is_api_path(scope["path"]):
            limiter = limiter_for(scope, self.keyring)
        if limiter is None:
            await self.app(scope, receive, send)
            return
        try:
            wait = await limiter.take(client_identity(scope, self.keyring))
        except RedisError as exc:
            log.warning("request refused, its rate limit cannot be checked: %s", exc)
            code, message = describe(exc)
            refusal = error_response(503, code, message, retry_after(RETRY_AFTER_MOMENT))
            await refusal(scope, receive, send)
            return
        if wait > 0:
            await _refusal(wait, limiter.setting)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _refusal(wait: float, setting: str) -> ASGIApp:
    seconds = max(1, math.ceil(wait))
    return error_response(
        429,
        "rate_limited",
        f"too many requests; try again in {seconds} s ({setting})",
        retry_after(seconds),
    )
