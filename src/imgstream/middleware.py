"""Small pure-ASGI middleware: the upload size limit, the security headers, CORS options,
JSON for every error, and ``HEAD``.

Starlette ships a body-limit middleware, but it answers ``413`` in plain text on some paths;
every imgstream error is JSON (``{"error": {"code", "message"}}``), so this one is ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgstream.errors import error_bytes

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


DOCS_CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; "
    b"base-uri 'none'; frame-ancestors 'none'"
)
"""Swagger UI starts from an inline script; that page shows no user content. All else is strict."""


def cors_options(origins: Iterable[str]) -> dict[str, Any]:
    """Options for Starlette's ``CORSMiddleware``: the allowed origins may call the API.

    No credentials (cookies) are involved: a browser page sends its API key as a header, so
    ``Authorization`` is allowed, and ``Location`` / ``Retry-After`` are readable by the page.
    """
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["Authorization", "Content-Type", "Accept"],
        "expose_headers": ["Location", "Retry-After"],
        "allow_credentials": False,
        "max_age": 600,
    }


async def send_json_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    """Answer from middleware, before any route runs, in the API's JSON error shape."""
    body = error_bytes(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuse request bodies above ``max_bytes`` on ``POST`` to the given paths, while streaming.

    A declared ``Content-Length`` above the limit is refused before any byte is read; a body
    that grows past it is cut off at the limit (the app sees a disconnect, the client a 413),
    so an upload is never held in full before it is judged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        reported_limit: int,
        paths: frozenset[str],
        setting: str = "IMGSTREAM_MAX_UPLOAD_BYTES",
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.reported_limit = reported_limit
        self.paths = paths
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # whatever the app answers to the cut-off body, the client gets the 413
            response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_json_error(
            send,
            413,
            "too_large",
            f"the upload is larger than {self.reported_limit} bytes ({self.setting})",
            {"connection": "close"},
        )


class SecurityHeaders:
    """Add a strict Content-Security-Policy and the usual hardening headers to every response.

    Under ``docs_paths`` (the API docs page) inline scripts and styles are allowed.
    """

    def __init__(self, app: ASGIApp, *, docs_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = SECURITY_HEADERS
        if self.docs_paths and str(scope["path"]).startswith(self.docs_paths):
            headers = ((b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY), *headers[1:])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in headers if header[0] not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _content_length(scope: Scope) -> int | None:
    declared = Headers(scope=scope).get("content-length")
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        return None


_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    416: "range_not_satisfiable",
    500: "internal_error",
}
_KEPT_HEADERS = frozenset({b"allow", b"retry-after", b"www-authenticate", b"vary", b"connection"})
MAX_ERROR_TEXT = 300


class JsonErrors:
    """Every error answer in the API's JSON shape, whoever made it.

    Starlette and its middleware answer some refusals in plain text (a CORS preflight from a
    disallowed origin, a malformed ``Range``); this rewrites any ``4xx``/``5xx`` that is not
    JSON into ``{"error": {"code", "message"}}``, keeping the original text as the message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        text = b""

        async def json_send(message: Message) -> None:
            nonlocal held, text
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = message.get("headers", [])
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if status >= 400 and not kind.startswith(b"application/json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                text += message.get("body", b"")[: MAX_ERROR_TEXT - len(text)]
                if message.get("more_body", False):
                    return
                await _send_rewritten(send, held, text)
                return
            await send(message)

        await self.app(scope, receive, json_send)


async def _send_rewritten(send: Send, start: Message, text: bytes) -> None:
    status = int(start["status"])
    message = text.decode("utf-8", "replace").strip() or _phrase(status)
    kept = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in start.get("headers", [])
        if name.lower() in _KEPT_HEADERS
    }
    await send_json_error(send, status, _ERROR_CODES.get(status, "http_error"), message, kept)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


class HeadAsGet:
    """``HEAD`` on every ``GET`` route: the request runs as ``GET`` and only the status and
    headers are sent. The route is told its client left once the headers are out, so a
    streaming answer (an event stream) ends at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def head_send(message: Message) -> None:
            nonlocal finished
            if finished:
                return
            if message["type"] == "http.response.body":
                finished = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def head_receive() -> Message:
            if finished:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
