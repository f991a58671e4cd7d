"""A corpus of hostile uploads, built here from a few bytes each (nothing is downloaded).

Decompression bombs of every accepted format, lying headers, truncations at many offsets,
empty and junk files, text and HTML named ``.jpg``, SVG with external references, polyglots,
huge frame counts, extreme aspect ratios and 1x1 images, each with the answer it must get.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from typing import Any

import pyvips

from batch import Expect, Sample
from images import encode, flat, photo, png_declaring

SCRIPT = b"<script>alert(1)</script>"


def hostile_samples(listener_url: str) -> list[Sample]:
    """Every hostile sample; SVG references point at ``listener_url``, which must stay unasked."""
    return [
        *bombs(),
        *frame_bombs(),
        *lying_headers(),
        *truncations(),
        *not_images(),
        *svgs(listener_url),
        *polyglots(),
        *extreme_shapes(),
        *tiny_images(),
        *odd_structures(),
        *hostile_names(),
    ]


# Decompression bombs: small files whose headers declare huge images.


def bombs() -> list[Sample]:
    limit = Expect.LIMIT
    return [
        Sample("png 100000x100000", png_declaring(100_000, 100_000), limit, "bomb.png"),
        Sample("png 10000x10000 (100 Mpx)", png_declaring(10_000, 10_000), limit, "bomb.png"),
        Sample("jpeg 60000x60000", jpeg_declaring(60_000, 60_000), limit, "bomb.jpg"),
        Sample("jpeg 12000x12000", jpeg_declaring(12_000, 12_000), limit, "bomb.jpg"),
        Sample("webp lossy 16383x16383", webp_lossy_declaring(16_383, 16_383), limit, "bomb.webp"),
        Sample("webp lossless 16384^2", webp_lossless_declaring(16_384, 16_384), Expect.NO_IMAGE),
        Sample("tiff 100000x100000", tiff_pages([(100_000, 100_000)]), limit, "bomb.tif"),
        Sample("tiff 9000x9000 (81 Mpx)", tiff_pages([(9_000, 9_000)]), limit, "bomb.tif"),
        Sample("avif 30000x30000", avif_declaring(30_000, 30_000), limit, "bomb.avif"),
        Sample("gif frame 65535x65535", gif([(0, 0, 65_535, 65_535)]), limit, "bomb.gif"),
        # libvips sizes a GIF by its frames: a huge screen around a small frame is harmless.
        Sample(
            "gif screen 65535x65535",
            gif([(0, 0, 1, 1)], screen=(65_535, 65_535)),
            Expect.IMAGE_OR_ERROR,
        ),
    ]


def frame_bombs() -> list[Sample]:
    return [
        Sample("gif 1000 frames", gif([(0, 0, 1, 1)] * 1000), Expect.LIMIT, "frames.gif"),
        Sample("webp 200 frames", animated(200, "webp"), Expect.LIMIT, "frames.webp"),
        Sample("tiff 150 pages", tiff_pages([(1, 1)] * 150), Expect.LIMIT, "pages.tif"),
        Sample("gif 100 frames (at the limit)", gif([(0, 0, 1, 1)] * 100), Expect.IMAGE),
    ]


# Headers that lie about the data.


def lying_headers() -> list[Sample]:
    png = encode(photo(48, 32), "png")
    jpeg = encode(photo(48, 32), "jpeg")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    return [
        Sample("png says 400x300, holds 8x8", png_declaring(400, 300), Expect.IMAGE_OR_ERROR),
        Sample("jpeg says 640x480, holds 48x32", patch_sof(jpeg, 640, 480), Expect.IMAGE_OR_ERROR),
        Sample("png named .jpg", png, Expect.IMAGE, "photo.jpg"),
        Sample("jpeg named .png", jpeg, Expect.IMAGE, "photo.png"),
        Sample("png with a bad IHDR CRC", bytes(bad_crc), Expect.IMAGE_OR_ERROR, "crc.png"),
    ]


def truncations() -> list[Sample]:
    samples = []
    for fmt in ("jpeg", "png", "webp", "gif", "tiff"):
        whole = encode(photo(96, 64, seed=3), fmt)
        for cut in sorted({1, 8, 30, 200, len(whole) // 2, len(whole) - 2}):
            samples.append(
                Sample(f"{fmt} cut at {cut}/{len(whole)}", whole[:cut], Expect.IMAGE_OR_ERROR)
            )
    return samples


# Not images at all.


def not_images() -> list[Sample]:
    junk = random.Random(4).randbytes(4096)
    refused = Expect.REFUSED
    return [
        Sample("zero bytes", b"", refused, "empty.jpg"),
        Sample("one NUL byte", b"\0", refused, "nul.jpg"),
        Sample("4 KiB of NULs", b"\0" * 4096, refused, "zeros.jpg"),
        Sample("4 KiB of random bytes", junk, refused, "random.jpg"),
        Sample("text named .jpg", b"hello, I am not a picture\n" * 20, refused, "cat.jpg"),
        Sample("html named .jpg", b"<!doctype html><html><body>" + SCRIPT, refused, "x.jpg"),
        Sample("json named .png", b'{"image": "no"}', refused, "data.png"),
        Sample("pdf", MINIMAL_PDF, refused, "doc.pdf"),
        Sample("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", refused),
        Sample("bmp 1x1", bmp_1x1(), refused, "one.bmp"),
        Sample("psd header", b"8BPS\x00\x01" + b"\0" * 6 + b"\x00\x03" + b"\0" * 64, refused),
        Sample("ico header", b"\0\0\1\0\1\0\x10\x10" + b"\0" * 64, refused, "favicon.ico"),
    ]


MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def svgs(listener_url: str) -> list[Sample]:
    """SVG is refused outright; none of these may make the service fetch anything."""
    url = listener_url.encode()
    head = b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
    image_ref = head + b' width="10" height="10"><image href="' + url + b'/a.png"/></svg>'
    xlink = head + b' width="10" height="10"><image xlink:href="' + url + b'/b.png"/></svg>'
    local = head + b' width="10" height="10"><image xlink:href="file:///etc/passwd"/></svg>'
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "'
        + url
        + b'/xxe">]>'
        + head
        + b' width="10" height="10"><text>&x;</text></svg>'
    )
    stylesheet = b'<?xml-stylesheet href="' + url + b'/s.css"?>' + head + b"/>"
    refused = Expect.REFUSED
    return [
        Sample("svg <image href=http>", image_ref, refused, "ref.svg"),
        Sample("svg xlink:href=http named .png", xlink, refused, "ref.png"),
        Sample("svg xlink:href=file:///etc/passwd", local, refused, "local.jpg"),
        Sample("svg with an external entity (XXE)", xxe, refused, "xxe.svg"),
        Sample("svg with an external stylesheet", stylesheet, refused, "css.svg"),
        Sample("svgz with an external reference", gzip.compress(xlink), refused, "ref.svgz"),
    ]


# Polyglots: valid images that are something else too.


def polyglots() -> list[Sample]:
    jpeg = encode(photo(40, 30), "jpeg")
    png = encode(photo(40, 30), "png")
    with_comment = jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(SCRIPT) + 2) + SCRIPT + jpeg[2:]
    described = photo(40, 30).copy()
    described.set_type(pyvips.GValue.gstr_type, "exif-ifd0-ImageDescription", SCRIPT.decode())
    exif = encode(described, "jpeg", keep="exif")
    text_chunk = png_chunk(b"tEXt", b"Comment\0" + SCRIPT)
    png_text = png[:33] + text_chunk + png[33:]
    zip_tail = b"PK\x03\x04" + b"\0" * 26 + b"evil.sh" + b"#!/bin/sh\nrm -rf /\n"
    gif_js = gif([(0, 0, 1, 1)], screen=(0x2A2F, 1)) + b"*/=1;" + SCRIPT
    return [
        Sample("jpeg + html after EOI", jpeg + SCRIPT, Expect.IMAGE, "poly.jpg", SCRIPT),
        Sample("jpeg with a script in COM", with_comment, Expect.IMAGE, "com.jpg", SCRIPT),
        Sample("jpeg with a script in EXIF", exif, Expect.IMAGE, "exif.jpg", SCRIPT),
        Sample("png with html in tEXt", png_text, Expect.IMAGE, "text.png", SCRIPT),
        Sample("png + zip", png + zip_tail, Expect.IMAGE_OR_ERROR, "a.png", b"rm -rf"),
        Sample("gif/js polyglot", gif_js, Expect.IMAGE_OR_ERROR, "x.gif", SCRIPT),
        Sample("pdf header + jpeg", b"%PDF-1.4\n" + jpeg, Expect.IMAGE_OR_ERROR, "x.pdf"),
        Sample("html + png", b"<html>" + SCRIPT + png, Expect.REFUSED, "x.png"),
    ]


# Shapes and sizes at the edges.


def extreme_shapes() -> list[Sample]:
    as_jpeg = {"operations": '[{"op":"resize","width":256}]', "format": "jpeg"}
    column, row = flat(1, 20_000, [90, 120, 200]), flat(20_000, 1, [200, 120, 90])
    return [
        Sample("png 1x20000", encode(column, "png"), Expect.IMAGE, "column.png"),
        Sample("tiff 1x20000", encode(column, "tiff"), Expect.IMAGE, "column.tif"),
        Sample("jpeg 20000x1", encode(row, "jpeg"), Expect.IMAGE, "row.jpg", fields=as_jpeg),
        Sample("gif 20000x1", encode(row, "gif"), Expect.IMAGE, "row.gif", fields=as_jpeg),
        Sample("webp 16383x1", encode(flat(16_383, 1, [1, 2, 3]), "webp"), Expect.IMAGE),
        Sample("png 1x20001 (over the side limit)", png_declaring(1, 20_001), Expect.LIMIT),
    ]


def tiny_images() -> list[Sample]:
    dot = flat(1, 1, [200, 30, 30])
    return [
        Sample(f"{fmt} 1x1", encode(dot, fmt), Expect.IMAGE, f"dot.{fmt}")
        for fmt in ("jpeg", "png", "webp", "gif", "tiff", "avif")
    ] + [Sample("png 1x1 grey+alpha", encode(flat(1, 1, [0, 0]), "png"), Expect.IMAGE)]


def odd_structures() -> list[Sample]:
    png = encode(photo(32, 24), "png")
    text_bomb = png_chunk(b"zTXt", b"bomb\0\0" + zlib.compress(b"\0" * 50_000_000, 9))
    jpeg = encode(photo(32, 24), "jpeg")
    app15 = (b"\xff\xef" + struct.pack(">H", 66) + b"\0" * 64) * 2000
    loop = tiff_pages([(4, 4)], loop=True)
    wide16 = (photo(64, 48).cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    return [
        Sample(
            "png with a 50 MB zTXt bomb", png[:33] + text_bomb + png[33:], Expect.IMAGE_OR_ERROR
        ),
        Sample("jpeg with 2000 APP15 segments", jpeg[:2] + app15 + jpeg[2:], Expect.IMAGE_OR_ERROR),
        Sample("tiff whose IFD points to itself", loop, Expect.IMAGE_OR_ERROR, "loop.tif"),
        Sample("png 16-bit interlaced", encode(wide16, "png", interlace=True), Expect.IMAGE),
    ]


def hostile_names() -> list[Sample]:
    png = encode(photo(20, 20), "png")
    return [
        Sample("name ../../escape", png, Expect.IMAGE, "../../../../escape.png"),
        Sample("name with markup", png, Expect.IMAGE, '<img src=x onerror="alert(1)">.png'),
        Sample("name with quotes and unicode", png, Expect.IMAGE, 'a"b\\c\u00fc\U0001f642.png'),
    ]


# Builders.


def jpeg_declaring(width: int, height: int) -> bytes:
    return patch_sof(encode(flat(8, 8, [1, 2, 3]), "jpeg"), width, height)


def patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) saying ``width`` x ``height``."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise ValueError("no SOF0/SOF2 marker")


def webp_lossy_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(flat(16, 16, [9, 9, 9]), "webp", keep="none"))
    at = data.index(b"\x9d\x01\x2a") + 3  # the VP8 key frame start code, then the sizes
    data[at : at + 4] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def webp_lossless_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(flat(16, 16, [9, 9, 9]), "webp", lossless=True, keep="none"))
    at = data.index(b"VP8L") + 9  # chunk id, size, signature byte 0x2f
    (bits,) = struct.unpack("<I", data[at : at + 4])
    bits = (bits & ~0xFFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    data[at : at + 4] = struct.pack("<I", bits)
    return bytes(data)


def avif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(flat(16, 16, [5, 6, 7]), "avif"))
    at = data.index(b"ispe") + 8  # box type, version and flags
    data[at : at + 8] = struct.pack(">II", width, height)
    return bytes(data)


def gif(frames: list[tuple[int, int, int, int]], screen: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF of black frames ``(left, top, width, height)``, each holding one encoded pixel."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff")
    if len(frames) > 1:
        out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for left, top, width, height in frames:
        out += b"\x21\xf9\x04\x04\x0a\x00\x00\x00"  # graphic control: 0.1 s per frame
        out += b"," + struct.pack("<HHHHB", left, top, width, height, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW: clear, pixel 0, end
    return bytes(out + b";")


def animated(frames: int, fmt: str) -> bytes:
    """``frames`` 1x1 frames, each a different colour (encoders merge identical frames)."""
    rows = pyvips.Image.xyz(1, frames)[1]
    strip = rows.bandjoin([(rows * 7) % 256, (rows * 13) % 256]) % 256
    strip = strip.cast("uchar").copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 1)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [40] * frames)
    return encode(strip, fmt)


def tiff_pages(sizes: list[tuple[int, int]], *, loop: bool = False) -> bytes:
    """A little-endian 8-bit grey TIFF with one directory per size, all sharing one strip."""
    entries_per_ifd = 9
    ifd_bytes = 2 + 12 * entries_per_ifd + 4
    strip_at = 8 + ifd_bytes * len(sizes)
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for index, (width, height) in enumerate(sizes):
        next_at = 8 + ifd_bytes * (index + 1) if index + 1 < len(sizes) else 0
        if loop:
            next_at = 8
        entries: list[tuple[int, int, int]] = [  # tag, type (3 short, 4 long), value
            (256, 4, width),
            (257, 4, height),
            (258, 3, 8),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, strip_at),
            (277, 3, 1),
            (278, 4, height),
            (279, 4, 16),
        ]
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHI", tag, kind, 1)
            out += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<I", next_at)
    return bytes(out + b"\x80" * 16)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bmp_1x1() -> bytes:
    pixels = b"\x00\x00\xff\x00"
    header = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixels), 0, 0, 54) + header + pixels


def describe(samples: list[Sample]) -> dict[str, Any]:
    """How many samples expect what (for a readable failure report)."""
    counts: dict[str, int] = {}
    for sample in samples:
        counts[str(sample.expect)] = counts.get(str(sample.expect), 0) + 1
    return counts
