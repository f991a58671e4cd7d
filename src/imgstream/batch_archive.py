"""A batch's results as one ZIP, written while it is sent: never whole in memory or on disk.

The standard library's ``zipfile`` writes to a sink that cannot seek (``_Sink``): each entry
gets a data descriptor after its bytes instead of sizes patched into its header, so every
byte can leave as soon as it is written. What is held at any time is one piece of one
result (``Storage.read_result``'s, 1 MiB locally, 256 KiB from S3) and the central
directory (under 100 bytes per entry). Entries are stored, not deflated: results are
JPEG, PNG, WebP, AVIF, GIF or TIFF, already compressed, and deflating them again would cost
CPU for next to nothing (docs/api.md, "Batches", says more and gives the measurement).

Names are the jobs' own download names (``download_name``), in the order the images were
sent, made unique with ``-2``, ``-3``...; they are worked out over every job of the batch,
finished or not, so a name never changes between two downloads of the same batch.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import anyio.to_thread

from imgstream.storage import Chunks


@dataclass(frozen=True, slots=True)
class Member:
    """One result to put in the archive."""

    name: str
    size: int
    """Its size as recorded with the job: only tells ``zipfile`` whether ZIP64 is needed."""
    modified: datetime
    read: Callable[[], Chunks]


def unique_names(names: Iterable[str]) -> list[str]:
    """``names`` in order, a repeated one made unique as ``stem-2.ext``, ``stem-3.ext``..."""
    taken: set[str] = set()
    unique = []
    for name in names:
        path = PurePosixPath(name)
        candidate, number = name, 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{path.stem}-{number}{path.suffix}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


class _Sink:
    """Where ``zipfile`` writes: it keeps what was written until ``drain`` takes it. Having
    no ``seek`` or ``tell``, it makes ``zipfile`` stream (data descriptors)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here beyond what ``drain`` hands on."""

    def close(self) -> None:
        """What was written stays for ``drain``."""

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


async def first_piece(chunks: Chunks) -> bytes | None:
    """The first piece of a result, or None when it is no longer stored; store trouble
    (``StorageUnavailable``) passes."""
    try:
        return await anyio.to_thread.run_sync(next, chunks, b"")
    except FileNotFoundError:
        return None


async def zip_stream(
    members: Sequence[Member], head: tuple[Chunks, bytes | None] | None = None
) -> AsyncIterator[bytes]:
    """The archive of ``members``, piece by piece; a result gone since it was listed is left
    out. ``head`` is the first member's opened reader and first piece when the caller read
    them already (so that a store that is down is a 503, not a cut stream)."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED)
    for index, member in enumerate(members):
        if index == 0 and head is not None:
            chunks, piece = head
        else:
            chunks = member.read()
            piece = None
        try:
            if index or head is None:
                piece = await first_piece(chunks)
            if piece is None:
                continue
            info = zipfile.ZipInfo(member.name, member.modified.timetuple()[:6])
            info.file_size = member.size
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as entry:
                while piece:
                    entry.write(piece)
                    yield sink.drain()
                    piece = await anyio.to_thread.run_sync(next, chunks, b"")
            yield sink.drain()
        finally:
            close: Any = getattr(chunks, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)
    archive.close()
    yield sink.drain()
