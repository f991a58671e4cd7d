"""CORS: which other origins' pages may call the API (Starlette's ``CORSMiddleware``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
