"""``HEAD`` on every ``GET`` route."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
