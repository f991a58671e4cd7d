"""The upload size limit, enforced while the body streams in.

Starlette ships a body-limit middleware, but it answers ``413`` in plain text on some paths;
every imgstream error is JSON (``{"error": {"code", "message"}}``), so this one is ours.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgstream.errors import error_response


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
        declared = _content_length(Headers(scope=scope))
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
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
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = error_response(
            413,
            "too_large",
            f"the upload is larger than {self.reported_limit} bytes ({self.setting})",
            {"connection": "close"},
        )
        await refusal(scope, receive, send)


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None
