"""The API key check at the door: ``401`` before a request's body is read (see ``auth``)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imgstream.auth import (
    CALLER_STATE_KEY,
    CHALLENGE,
    OPERATOR_PATHS,
    PUBLIC_API_PATHS,
    KeyRing,
    is_api_path,
)
from imgstream.errors import error_response


class ApiKeyGate:
    """Refuse ``/api`` requests without a valid key with ``401``, before the body is read.

    The caller it finds is left in the request state for the ``caller`` dependency.
    """

    def __init__(self, app: ASGIApp, *, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (is_api_path(path) or path in OPERATOR_PATHS)
            or path in PUBLIC_API_PATHS
        ):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        caller = self.keyring.identify(authorization)
        if caller is None:
            await _refusal(presented=authorization is not None)(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_STATE_KEY] = caller
        await self.app(scope, receive, send)


def _refusal(*, presented: bool) -> ASGIApp:
    if presented:
        message = "the API key is not valid"
        challenge = f'{CHALLENGE}, error="invalid_token"'
    else:
        message = "this API needs a key: send Authorization: Bearer <key>"
        challenge = CHALLENGE
    return error_response(401, "unauthorized", message, {"www-authenticate": challenge})
