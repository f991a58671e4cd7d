"""Redis calls that wait out an outage instead of failing the work in hand.

A worker never drops a job because Redis is briefly unreachable, frozen or refusing writes
(``MISCONF``, out of memory): it retries with a capped exponential pause. Two kinds of call
differ only in how they treat a stop request:
- a *read* (taking new work) gives up with ``Stopped`` once the worker is stopping;
- a *write* that settles work already done keeps waiting even then, bounded by the
  supervisor's grace period, so that a finished render is recorded rather than redone.
Any other Redis error is raised as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio
from redis.exceptions import RedisError

from imgstream.redis_health import is_outage, refusal

log = logging.getLogger("imgstream.worker")

P = ParamSpec("P")
T = TypeVar("T")

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0


class Stopped(Exception):
    """Raised out of a Redis wait when the worker was asked to stop meanwhile."""


class Patience:
    """Retries Redis calls through outages; ``stopping`` says whether reads should give up."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self._stopping = stopping

    async def read(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """A call that waits out outages, unless the worker is asked to stop (``Stopped``)."""
        return await self._retrying(True, call, *args, **kwargs)

    async def write(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """A write that settles work already done: it waits out outages even while stopping."""
        return await self._retrying(False, call, *args, **kwargs)

    async def _retrying(
        self,
        until_stopped: bool,
        call: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        pause = FIRST_PAUSE
        while True:
            try:
                return await call(*args, **kwargs)
            except RedisError as exc:
                if not is_outage(exc):
                    raise
                if until_stopped and self._stopping():
                    raise Stopped() from None
                log.warning(
                    "redis unavailable (%s); retrying in %.1f s",
                    refusal(exc) or exc,
                    pause,
                    extra={"event": "redis.unavailable"},
                )
                await anyio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)
