"""Server-Sent Events: the framing, a response that ends with its client, the status stream.

A job's event stream promises: the current state at once, then every state that differs from
the last one sent, then the end of the stream once the job is ``done`` or ``failed``. Between
changes a comment line keeps proxies and the browser from timing the connection out.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import anyio
from redis.exceptions import RedisError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from imgstream.errors import RETRY_AFTER_BUSY, ApiError, error_body, retry_after
from imgstream.job_changes import BatchFollower, Follower, TooManyStreams
from imgstream.jobs import JobRecord

log = logging.getLogger("imgstream.sse")

RECONNECT_MS = 2000
"""How long a browser waits before it reconnects a stream that broke off."""

KEEP_ALIVE = b": keep-alive\n\n"

EVENT_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a buffering proxy (nginx) would hold events back
}


def event(name: str, data: str) -> bytes:
    """One event; every line of ``data`` becomes its own ``data:`` field, as the format wants."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


@dataclass(frozen=True, slots=True)
class StatusView:
    """A job's state as it is sent: its JSON document, and whether it is final."""

    data: str
    final: bool


def stream_refused(exc: TooManyStreams) -> ApiError:
    """The answer to a stream a cap refused: 429 for the client's cap, 503 for the process's."""
    log.warning("event stream refused: %s", exc, extra={"event": "limit.streams"})
    status, code = (429, "too_many_streams") if exc.scope == "client" else (503, "busy")
    return ApiError(status, code, f"{exc}; try again shortly", retry_after(RETRY_AFTER_BUSY))


async def status_events(
    first: StatusView,
    follower: Follower,
    snapshot: Callable[[JobRecord], StatusView],
    keepalive: float,
) -> AsyncGenerator[bytes, None]:
    """``status`` events from ``first`` until a final state is sent.

    Each state the hub pushes, and each keep-alive tick (the follower re-reads then, as an
    announcement may be lost), is compared with the last one sent and sent if it differs. A
    job that vanishes (expired) ends the stream with a ``gone`` event. While Redis is
    unreachable the stream stays open on keep-alives: the job's final status still comes
    once Redis is back, or the client's reconnect (or its fallback to polling) takes over.
    """
    yield f"retry: {RECONNECT_MS}\n".encode() + event("status", first.data)
    last = first
    while not last.final:
        try:
            record, announced = await follower.next(keepalive)
        except RedisError as exc:
            log.warning("event stream could not re-read its job, redis unavailable: %s", exc)
            yield KEEP_ALIVE
            continue
        if record is None:
            gone = error_body("not_found", "no such job (expired)")
            yield event("gone", json.dumps(gone))
            return
        current = snapshot(record)
        if current.data != last.data:
            yield event("status", current.data)
            last = current
        elif not announced:
            yield KEEP_ALIVE


async def batch_events(
    jobs: dict[str, JobRecord | None],
    follower: BatchFollower,
    job_snapshot: Callable[[JobRecord], str],
    summary: Callable[[list[JobRecord | None]], StatusView],
    keepalive: float,
) -> AsyncGenerator[bytes, None]:
    """A batch's events: a ``job`` event for each of its ``jobs`` (in order) and a ``batch``
    event (``summary``) at once, then a ``job`` event for every job whose state changes,
    each followed by the new ``batch`` summary; the last event is ``end`` (the final
    summary), sent once every job has ended. Keep-alives, lost announcements and Redis
    trouble are handled as in ``status_events``.
    """
    sent: dict[str, str] = {}

    def changed(records: dict[str, JobRecord | None]) -> list[bytes]:
        out = []
        for job_id, record in records.items():
            jobs[job_id] = record
            if record is not None and sent.get(job_id) != (data := job_snapshot(record)):
                sent[job_id] = data
                out.append(event("job", data))
        return out

    def closing(view: StatusView) -> bytes:
        return event("end" if view.final else "batch", view.data)

    last = summary(list(jobs.values()))
    yield b"".join([f"retry: {RECONNECT_MS}\n".encode(), *changed(dict(jobs)), closing(last)])
    while not last.final:
        unfinished = [job_id for job_id, job in jobs.items() if job and not job.status.is_final]
        try:
            records, announced = await follower.next(keepalive, unfinished)
        except RedisError as exc:
            log.warning("batch event stream could not re-read its jobs, redis unavailable: %s", exc)
            yield KEEP_ALIVE
            continue
        out = changed(records)
        current = summary(list(jobs.values()))
        if current.data != last.data:
            out.append(closing(current))
            last = current
        if out:
            yield b"".join(out)
        elif not announced:
            yield KEEP_ALIVE


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that stops the moment its client goes away.

    Whatever ASGI version the server speaks (under 2.4 Starlette would notice a vanished
    client only at its next write, up to a keep-alive period later), a listener cancels the
    stream at once; and ``on_close`` runs however the response ends, even if it never
    started, so the Redis subscription behind a stream never outlives it.
    """

    media_type = "text/event-stream"

    def __init__(
        self, events: AsyncGenerator[bytes, None], on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(events, headers=EVENT_STREAM_HEADERS)
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client left while we wrote
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
                await self._on_close()
