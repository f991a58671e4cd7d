"""Every error answer in the API's JSON shape, whoever made it."""

from __future__ import annotations

from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgstream.errors import error_response

ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    416: "range_not_satisfiable",
    500: "internal_error",
}
"""The ``code`` of a rewritten error, by status (``http_error`` for any other)."""
KEPT_HEADERS = ("allow", "retry-after", "www-authenticate", "vary", "connection")
"""Headers of the original answer that the JSON one keeps."""
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
                kind = Headers(raw=message.get("headers", [])).get("content-type", "")
                if status >= 400 and not kind.startswith("application/json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                text += message.get("body", b"")[: MAX_ERROR_TEXT - len(text)]
                if message.get("more_body", False):
                    return
                await _rewritten(held, text)(scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, json_send)


def _rewritten(start: Message, text: bytes) -> ASGIApp:
    status = int(start["status"])
    message = text.decode("utf-8", "replace").strip() or _phrase(status)
    original = Headers(raw=start.get("headers", []))
    kept = {name: original[name] for name in KEPT_HEADERS if name in original}
    return error_response(status, ERROR_CODES.get(status, "http_error"), message, kept)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
