"""Encoding a decoded, transformed image: each format's settings, its size bounds, ``max_bytes``.

The settings per format are chosen for CPU first (JPEG without Huffman optimisation, AVIF at
low effort) at the file sizes users expect; the bounds are checked before any pixel is
computed, so a result too large for the operator or the format fails cheaply.
"""

from __future__ import annotations

from typing import Any

import pyvips

from imgstream.image_errors import LimitExceeded, TooManyBytes
from imgstream.operations import JobSpec, Limits, OutputFormat

_FORMAT_MAX_SIDE = {
    OutputFormat.JPEG: 65_535,
    OutputFormat.WEBP: 16_383,
    OutputFormat.AVIF: 16_384,  # libheif's default security limit per side
    OutputFormat.GIF: 65_535,
}
_SAVE_OPTIONS: dict[OutputFormat, dict[str, Any]] = {
    OutputFormat.JPEG: {"optimize_coding": False},
    OutputFormat.PNG: {"compression": 6},
    OutputFormat.WEBP: {},
    # effort 2 of 9: AV1 at libvips' default (4) costs several times the CPU of the rest.
    OutputFormat.AVIF: {"compression": "av1", "effort": 2},
    OutputFormat.GIF: {},
    OutputFormat.TIFF: {"compression": "deflate"},
}
_NEW_KEEP = pyvips.at_least_libvips(8, 15)
_NO_METADATA: dict[str, Any] = {"keep": "none"} if _NEW_KEEP else {"strip": True}
_ALL_METADATA: dict[str, Any] = {"keep": "all"} if _NEW_KEEP else {"strip": False}
_QUALITY_STEPS = 7
"""Encodes tried after the first to meet ``max_bytes``: a bisection of 1-100."""


def encode(image: Any, output_format: OutputFormat, spec: JobSpec) -> bytes:
    """The encoded image; with ``max_bytes``, at the highest quality that fits (bisection)."""
    suffix, options = f".{output_format.extension}", _SAVE_OPTIONS[output_format]
    metadata = _NO_METADATA if spec.strip else _ALL_METADATA
    default = output_format.default_quality
    quality = None if default is None else spec.quality or default  # lossless: no quality

    def encoded(q: int | None) -> bytes:
        extra = {} if q is None else {"Q": q}
        data: bytes = image.write_to_buffer(suffix, **options, **extra, **metadata)
        return data

    data = encoded(quality)
    if spec.max_bytes is None or len(data) <= spec.max_bytes:
        return data
    if quality is None:
        raise TooManyBytes(
            f"max_bytes: the {output_format.name} result is {len(data)} bytes, above "
            f"{spec.max_bytes}, and {output_format.name} is lossless; choose jpeg, webp or "
            "avif, or make the image smaller"
        )
    best, smallest, low, high = None, len(data), 1, quality - 1
    for _ in range(_QUALITY_STEPS):
        if low > high:
            break
        middle = (low + high) // 2
        attempt = encoded(middle)
        if len(attempt) <= spec.max_bytes:
            best, low = attempt, middle + 1
        else:
            smallest, high = len(attempt), middle - 1
    if best is None:
        raise TooManyBytes(
            f"max_bytes: even at quality 1 the {output_format.name} result is {smallest} "
            f"bytes, above {spec.max_bytes}; allow more bytes or make the image smaller"
        )
    return best


def check_output(image: Any, output_format: OutputFormat, limits: Limits) -> None:
    """Raise ``LimitExceeded`` if the result is beyond the operator's limits or the format's."""
    check_size(int(image.width), int(image.height), output_format, limits)


def check_size(width: int, height: int, output_format: OutputFormat, limits: Limits) -> None:
    """``check_output`` for a result of ``width`` x ``height``."""
    if max(width, height) > limits.max_dimension:
        raise LimitExceeded(
            f"the result would be {width}x{height}; no side may exceed "
            f"{limits.max_dimension} px (IMGSTREAM_MAX_DIMENSION)"
        )
    if width * height > limits.max_pixels:
        raise LimitExceeded(
            f"the result would have {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} (IMGSTREAM_MAX_PIXELS)"
        )
    format_max = _FORMAT_MAX_SIDE.get(output_format)
    if format_max is not None and max(width, height) > format_max:
        raise LimitExceeded(
            f"the result would be {width}x{height}; "
            f"{output_format.name} allows at most {format_max} px per side"
        )
