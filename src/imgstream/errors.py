"""The one shape of every imgstream error answer, ``{"error": {"code", "message"}}``.

Routes, middlewares (they send ``error_response``'s answer themselves), the HTTP server and
the event stream all build it here, so a client parses one format whatever refused it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

RETRY_AFTER_MOMENT = 2
"""Seconds a client waits out a passing trouble: Redis did not answer (a blip, a failover),
or every connection slot was taken."""
RETRY_AFTER_BUSY = 5
"""Seconds a client waits when the service is full (backlog, live streams) or not ready."""
RETRY_AFTER_DISK = 30
"""Seconds a client waits while the data directory is full."""


class ApiError(Exception):
    """An answer to the client other than success: status, machine code, human message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def retry_after(seconds: int) -> dict[str, str]:
    """The ``Retry-After`` header of a refusal that is worth trying again."""
    return {"Retry-After": str(seconds)}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON object of an error: a machine ``code`` and a human ``message``."""
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer with ``status`` and optional extra headers (e.g. Retry-After)."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def error_bytes(code: str, message: str) -> bytes:
    """``error_body`` encoded exactly as ``error_response`` sends it, for the HTTP server's own
    refusals, written on the connection before any ASGI app runs."""
    return bytes(error_response(400, code, message).body)
