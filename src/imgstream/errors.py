"""The one shape of every imgstream error answer, ``{"error": {"code", "message"}}``.

Routes, middlewares (plain ASGI ones too) and the event stream all build it here, so a
client parses one format whatever refused it.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON object of an error: a machine ``code`` and a human ``message``."""
    return {"error": {"code": code, "message": message}}


def error_bytes(code: str, message: str) -> bytes:
    """``error_body`` encoded, for middlewares that send raw ASGI messages."""
    return json.dumps(error_body(code, message)).encode()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer with ``status`` and optional extra headers (e.g. Retry-After)."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)
