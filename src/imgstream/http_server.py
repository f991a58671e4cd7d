"""The HTTP server's own limits: what a client may cost before any route runs.

uvicorn's httptools protocol (its C parser: a 6 MB upload costs the API ~26 % less CPU than
through h11, docs/performance.md), with what it lacks for a service on the internet
(docs/security.md):
- a cap on open connections per process (``IMGSTREAM_HTTP_MAX_CONNECTIONS``): past it a new
  connection gets ``503`` and is closed at once, so file descriptors cannot run out;
- a deadline for the request line and headers (``IMGSTREAM_HTTP_HEADER_TIMEOUT``): a client
  that never finishes them gets ``408`` and loses the connection;
- a size limit on them (``IMGSTREAM_HTTP_MAX_HEADER_BYTES``, counted as they arrive):
  ``431``, or ``414`` when the request line alone is too long;
- a minimum pace for request bodies (``IMGSTREAM_HTTP_MIN_BODY_RATE`` bytes/s, judged over
  each ``IMGSTREAM_HTTP_BODY_WINDOW``): a body trickled in slower gets ``408``;
- every refusal, and the parser's own ``400`` for a malformed request, is the API's JSON error,
  and each one is logged (``event: limit.http``).
The header count and the URL length of requests that fit are checked by ``RequestLimits``
(``middleware.request_limits``), and idle keep-alive connections are closed by uvicorn
(``IMGSTREAM_HTTP_KEEPALIVE_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imgstream.config import Settings
from imgstream.errors import RETRY_AFTER_MOMENT, error_bytes

log = logging.getLogger("imgstream.http")

LINGER = 5.0
"""Seconds a refused connection keeps reading (and discarding) before it is closed."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int
    max_header_bytes: int
    max_headers: int
    max_url_bytes: int
    header_timeout: float
    min_body_rate: int
    body_window: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_connections=settings.http_max_connections,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            max_url_bytes=settings.http_max_url_bytes,
            header_timeout=settings.http_header_timeout,
            min_body_rate=settings.http_min_body_rate,
            body_window=settings.http_body_window,
        )


_REFUSALS = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    408: ("request_timeout", "the request was not sent in time"),
    414: ("uri_too_long", "the request line is longer than {max_url_bytes} bytes "
          "(IMGSTREAM_HTTP_MAX_URL_BYTES)"),
    431: ("headers_too_large", "the request headers are larger than {max_header_bytes} bytes "
          "(IMGSTREAM_HTTP_MAX_HEADER_BYTES)"),
    503: ("busy", "the server has too many open connections "
          "(IMGSTREAM_HTTP_MAX_CONNECTIONS); try again shortly"),
}  # fmt: skip


def raw_error(status: int, code: str, message: str, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 response in the API's JSON error shape, that closes the connection."""
    body = error_bytes(code, message)
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; ``limits`` is set by
    ``protocol_for``. The head (request line and headers) is what arrives until httptools
    has parsed the headers; the body, what follows until the message is complete."""

    limits: HttpLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._head_bytes = 0
        self._line_seen = False
        self._in_body = False
        self._body_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, {"retry-after": str(RETRY_AFTER_MOMENT)})
            return
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            if self._head_timer is None:
                self._expect_head()
            self._head_bytes += len(data)
            self._line_seen = self._line_seen or b"\n" in data
        super().data_received(data)
        if self._refused or not self._awaiting_head:
            return
        if self._head_bytes > self.limits.max_header_bytes:  # all of it was head
            self._refuse(431 if self._line_seen else 414, {})

    def send_400_response(self, msg: str) -> None:
        """httptools found the request malformed (or its URL over its own 64 KiB bound)."""
        if self._awaiting_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431 if self._line_seen else 414, {})
        elif len(getattr(self, "url", b"")) > self.limits.max_url_bytes:
            self._refuse(414, {})
        else:
            self._refuse(400, {})

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._line_seen = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        if self.limits.min_body_rate and not self._refused:
            self._in_body = True
            self._body_bytes = 0
            self._arm_body_check()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._awaiting_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _expect_head(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._refused:
            self._refuse(408, {})

    def _arm_body_check(self) -> None:
        self._body_timer = self.loop.call_later(self.limits.body_window, self._check_body_pace)

    def _check_body_pace(self) -> None:
        self._body_timer = None
        if self._refused or not self._in_body:
            return
        paused = self.flow is not None and self.flow.read_paused  # we stopped reading: not theirs
        if not paused and self._body_bytes < self.limits.min_body_rate * self.limits.body_window:
            rate = self.limits.min_body_rate
            slow = f"the request body arrives slower than {rate} bytes/s"
            self._refuse(408, {}, detail=f"{slow} (IMGSTREAM_HTTP_MIN_BODY_RATE)")
            return
        self._body_bytes = 0
        self._arm_body_check()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _refuse(self, status: int, headers: dict[str, str], detail: str = "") -> None:
        """Answer ``status`` as JSON, log it, close the connection; the app (if it runs) is
        told the client went away, and nothing it sends reaches the wire."""
        self._refused = True
        self._cancel_timers()
        code, template = _REFUSALS[status]
        message = detail or template.format(
            max_url_bytes=self.limits.max_url_bytes, max_header_bytes=self.limits.max_header_bytes
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning(
            "refused %s: %s", client, message, extra={"event": "limit.http", "status": status}
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # too late for a status: just end it
                return
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        self.transport.write(raw_error(status, code, message, headers))
        if status == 503 or (status == 408 and self._awaiting_head):
            self.transport.close()  # a flood or a stalled head: its descriptor goes at once
            return
        # The client is still sending: half-close and discard what comes (data_received
        # ignores it) until it closes, so that unread request bytes do not reset the
        # connection before it has read the answer; LINGER bounds the wait.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``), bound to these settings' limits."""
    return type(
        "ImgstreamHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": HttpLimits.from_settings(settings)},
    )
