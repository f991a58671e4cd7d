"""The batch ZIP writer, pure: unique names, an archive that any reader opens, and pieces that
leave as they are written (never the whole archive, never a whole member, held at once)."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from imgstream.batch_archive import Member, unique_names, zip_stream

pytestmark = pytest.mark.anyio

PIECE = 64 * 1024
WHEN = datetime(2026, 12, 3, 7, 0, 0, tzinfo=UTC)


def test_names_are_made_unique_in_order() -> None:
    assert unique_names(["a.png", "b.jpg", "a.png", "A.png", "a-2.png", "a.png"]) == [
        "a.png",
        "b.jpg",
        "a-2.png",
        "A-3.png",
        "a-2-2.png",
        "a-4.png",
    ]


def pieces(data: bytes, opened: list[str], name: str) -> Iterator[bytes]:
    opened.append(name)
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]


def gone() -> Iterator[bytes]:
    raise FileNotFoundError("expired")
    yield b""  # pragma: no cover  (makes this a generator, as the stores' readers are)


async def test_the_archive_streams_piece_by_piece_and_reads_back() -> None:
    contents = {f"r{n}.bin": bytes([n]) * (PIECE * 10 + n) for n in range(3)}
    opened: list[str] = []
    members = [
        Member(name, len(data), WHEN, lambda d=data, n=name: pieces(d, opened, n))
        for name, data in contents.items()
    ]
    members.insert(1, Member("expired.bin", 10, WHEN, gone))
    sizes = []
    out = io.BytesIO()
    async for piece in zip_stream(members):
        sizes.append(len(piece))
        out.write(piece)
    assert opened == list(contents)
    assert max(sizes) <= PIECE + 1024  # one piece of one member (with its header) at a time
    assert sum(sizes) > 30 * PIECE
    archive = zipfile.ZipFile(out)
    assert archive.testzip() is None
    assert archive.namelist() == list(contents)  # the result gone meanwhile is left out
    for info in archive.infolist():
        data = contents[info.filename]
        assert archive.read(info) == data
        assert zlib.crc32(data) == info.CRC
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == (2026, 12, 3, 7, 0, 0)
