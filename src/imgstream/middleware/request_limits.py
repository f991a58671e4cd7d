"""The header count and the URL length of a request the HTTP server let through
(``http_server`` bounds the rest before any ASGI app runs)."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from imgstream.errors import error_response

log = logging.getLogger("imgstream.http")


class RequestLimits:
    """ASGI middleware: ``431`` for too many header fields, ``414`` for a too-long target, in
    the API's JSON shape, before any other middleware looks at the request."""

    def __init__(self, app: ASGIApp, *, max_headers: int, max_url_bytes: int) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            status = 0
            if len(scope.get("headers", ())) > self.max_headers:
                status, code = 431, "headers_too_large"
                message = f"more than {self.max_headers} header fields (IMGSTREAM_HTTP_MAX_HEADERS)"
            elif target > self.max_url_bytes:
                status, code = 414, "uri_too_long"
                message = (
                    f"the request target is longer than {self.max_url_bytes} bytes "
                    "(IMGSTREAM_HTTP_MAX_URL_BYTES)"
                )
            if status:
                log.warning("refused: %s", message, extra={"event": "limit.http", "status": status})
                refusal = error_response(status, code, message, {"connection": "close"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
