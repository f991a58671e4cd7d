"""A prototype, for measurement only: uvicorn's httptools protocol with imgstream's HTTP limits.

``imgstream.http_server.GuardedH11Protocol`` puts the limits (connection cap, header deadline
and size, body pace, JSON refusals) on uvicorn's h11 protocol. This does the same on the
httptools one, so that ``bench/http_servers.py`` can tell whether httptools' speed survives
the limits. Not used by imgstream; if it is ever adopted it belongs in ``src/`` with the
tests of ``tests/test_http_limits.py`` run against it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imgstream.config import Settings
from imgstream.errors import RETRY_AFTER_MOMENT
from imgstream.http_server import _REFUSALS, LINGER, HttpLimits, raw_error

log = logging.getLogger("imgstream.http")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
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
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            if self._head_timer is None:
                self._arm_head()
            self._head_bytes += len(data)
            self._line_seen = self._line_seen or b"\n" in data
        super().data_received(data)
        if self._refused or not self._awaiting_head:
            return
        if self._head_bytes > self.limits.max_header_bytes:  # all of it was head
            self._refuse(431 if self._line_seen else 414, {})

    def send_400_response(self, msg: str) -> None:
        if self._awaiting_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431 if self._line_seen else 414, {})
        elif len(getattr(self, "url", b"")) > self.limits.max_url_bytes:
            self._refuse(414, {})  # httptools.parse_url refuses URLs over 64 KiB
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
            self._body_timer = self.loop.call_later(self.limits.body_window, self._check_pace)

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

    def _arm_head(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._refused:
            self._refuse(408, {})

    def _check_pace(self) -> None:
        self._body_timer = None
        if self._refused or not self._in_body:
            return
        paused = self.flow is not None and self.flow.read_paused
        if not paused and self._body_bytes < self.limits.min_body_rate * self.limits.body_window:
            rate = self.limits.min_body_rate
            slow = f"the request body arrives slower than {rate} bytes/s"
            self._refuse(408, {}, detail=f"{slow} (IMGSTREAM_HTTP_MIN_BODY_RATE)")
            return
        self._body_bytes = 0
        self._body_timer = self.loop.call_later(self.limits.body_window, self._check_pace)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _refuse(self, status: int, headers: dict[str, str], detail: str = "") -> None:
        """As ``GuardedH11Protocol._refuse``."""
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
                self.transport.close()
                return
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        self.transport.write(raw_error(status, code, message, headers))
        if status == 503 or (status == 408 and self._awaiting_head):
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    return type(
        "ImgstreamHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": HttpLimits.from_settings(settings)},
    )
