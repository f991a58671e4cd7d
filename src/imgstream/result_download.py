"""The answer to ``GET /api/jobs/{id}/result``, whatever holds the result.

A local file is sent by ``FileResponse`` (with ``Range``); an object is streamed from the
bucket a piece at a time (one ``Range`` passed through to S3, so a resumed download costs
only what is left), or, with ``IMGSTREAM_S3_PRESIGN``, the client is sent to a presigned URL
(307, valid ``IMGSTREAM_S3_PRESIGN_TTL`` seconds). The first piece is read before the status
line goes out, so an unreachable store is a 503, never a cut answer.

A result never changes while it is kept: its content key is a strong ``ETag``, it may be
cached (``immutable``) for the time it has left, and an ``If-None-Match`` naming it is a
``304`` before the store is asked anything (whatever holds the result, presigned or not).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import Headers

from imgstream.content import etag, matches
from imgstream.errors import error_response
from imgstream.storage import Chunks, StoredResult


class Unsatisfiable(Exception):
    """The range asked for lies outside the object (a 416)."""


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def download_name(filename: str, job_id: str, extension: str) -> str:
    """A harmless download name: the client's stem reduced to ``[A-Za-z0-9._-]``."""
    stem = _SAFE_NAME.sub("_", Path(filename).stem).strip("._")[:64]
    return f"{stem or job_id}.{extension}"


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a result may be cached (``seconds`` it has left), by whom, and its content
    key (``""`` for a result stored before keys were recorded: no ``ETag``)."""

    seconds: int
    shared: bool
    """Whether caches shared between users may keep it (API keys are off): ``public``."""
    key: str = ""

    def headers(self) -> dict[str, str]:
        audience = "public" if self.shared else "private"
        headers = {"Cache-Control": f"{audience}, max-age={max(0, self.seconds)}, immutable"}
        if self.key:
            headers["ETag"] = etag(self.key)
        return headers

    def not_modified(self, request_headers: Headers) -> Response | None:
        """The ``304`` answering an ``If-None-Match`` that names this result, else None."""
        if self.key and matches(request_headers.get("if-none-match"), self.key):
            return Response(status_code=304, headers=self.headers())
        return None


async def result_response(
    stored: StoredResult,
    headers: Headers,
    media_type: str,
    filename: str,
    freshness: Freshness,
) -> Response:
    """A redirect to a presigned URL, the local file, or the object (or the one range asked
    for) streamed from the bucket."""
    if stored.url is not None:
        redirect = {"Cache-Control": "no-store"}
        if freshness.key:
            redirect["ETag"] = etag(freshness.key)
        return RedirectResponse(stored.url, status_code=307, headers=redirect)
    if stored.path is not None:
        return FileResponse(
            stored.path,
            media_type=media_type,
            filename=filename,
            content_disposition_type="inline",
            headers=freshness.headers(),
        )
    assert stored.open is not None
    try:
        byte_range = requested_range(headers.get("range"), stored.size)
    except Unsatisfiable:
        return error_response(
            416,
            "range_not_satisfiable",
            f"the range asked for is outside the result ({stored.size} bytes)",
            {"Content-Range": f"bytes */{stored.size}"},
        )
    chunks = await anyio.to_thread.run_sync(stored.open, byte_range)
    first = await anyio.to_thread.run_sync(next, chunks, b"")  # errors surface here, as a 503
    extra: dict[str, str] = {
        **freshness.headers(),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if byte_range is None:
        status, length = 200, stored.size
    else:
        status, length = 206, byte_range[1] - byte_range[0] + 1
        extra["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{stored.size}"
    extra["Content-Length"] = str(length)
    return StreamingResponse(
        _pieces(first, chunks), status_code=status, media_type=media_type, headers=extra
    )


async def _pieces(first: bytes, chunks: Chunks) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        while piece := await anyio.to_thread.run_sync(next, chunks, b""):
            yield piece
    finally:
        close: Any = getattr(chunks, "close", None)
        if close is not None:
            await anyio.to_thread.run_sync(close)


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range of a ``Range`` header, clipped to ``size`` (first and last
    inclusive); None for no header, several ranges or a unit we do not know (the whole
    object is sent). A range outside the object is a 416."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # the last N bytes
        count = int(last_text)
        if count == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - count), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        raise Unsatisfiable()
    return first, min(last, size - 1)
