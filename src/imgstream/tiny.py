"""Tiny sources rendered in memory: one decode, the steps as array operations, one encode.

For an image of a few thousand pixels a render is libvips' fixed cost per operation (open,
``linear``, ``bandmean``, ``cast``, the save, the deadline's ``copy``: ~0.1-0.3 ms each),
not its pixels. A source of at most ``Limits.max_tiny_pixels`` (by its header) that needs no
conversion is therefore decoded once through the header already open, its steps are applied
by numpy when each is an exact array operation (grayscale, crop, flip, quarter turns), and a
PNG is written with ``zlib`` directly; any other format goes through one libvips save.

What is promised is the libvips path's result: the same pixels (the grayscale repeats
libvips' float arithmetic step by step, checked on every RGB value in tests/test_tiny.py),
dimensions, format, resolution and no metadata (only sources whose metadata is dropped, and
that carry no ICC profile or orientation, come here). No deadline is watched: a render this
small is over in well under a millisecond.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import pyvips

from imgstream import encoding, luma, placeholder
from imgstream.decoding import SourceInfo
from imgstream.operations import JobSpec, Limits, OutputFormat
from imgstream.steps import Crop, Direction, Flip, Grayscale, Operation, Rotate
from imgstream.transforms import REC601_LUMA, check_crop

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
"""PNG colour type by band count: grey, grey + alpha, RGB, RGBA (8 bits each)."""
_PNG_LEVEL = 6
"""As ``encoding``'s PNG ``compression``, and with no row filter, as libvips' default."""
_PLAIN = {("b-w", 1), ("b-w", 2), ("srgb", 3), ("srgb", 4)}
"""Interpretations and band counts taken as they are: grey or sRGB, with or without alpha."""
_LUMA_WEIGHTS = tuple(3 * weight for weight in REC601_LUMA)
"""``transforms.grayscale`` takes the mean of the bands scaled by three times the weights."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A source ``plan`` accepted, as its header describes it."""

    width: int
    height: int
    bands: int
    grey: bool


@dataclass(frozen=True, slots=True)
class Result:
    data: bytes
    width: int
    height: int
    small: tuple[int, int, bytes] | None


def plan(
    header: Any, info: SourceInfo, spec: JobSpec, output_format: OutputFormat, limits: Limits
) -> Plan | None:
    """The source's shape if this render is one for the in-memory path, else ``None``.

    It is when the source is within ``limits.max_tiny_pixels``, is already upright 8-bit sRGB
    or grey without an ICC profile (what the libvips path too decodes through the header),
    its metadata is to be dropped, every step is an array operation, no transparency is to
    be flattened for JPEG, the result is not a GIF, and the luma path would not take it (a
    JPEG's grayscale).
    """
    if info.width * info.height > limits.max_tiny_pixels or not spec.strip:
        return None
    steps = list(spec.operations)
    if not all(_is_array_step(step) for step in steps):
        return None
    bands, interpretation = int(header.bands), str(header.interpretation)
    if (interpretation, bands) not in _PLAIN or header.format != "uchar":
        return None
    if header.get_typeof("icc-profile-data") or _orientation(header) != 1:
        return None
    if output_format is OutputFormat.JPEG and bands in (2, 4):
        return None
    if output_format is OutputFormat.GIF:
        return None  # it carries the source's frame timing (``delay``), as only libvips' path
    if info.format == "jpeg" and luma.wanted(steps):
        return None  # ``luma`` decodes the Y plane alone: cheaper still
    return Plan(info.width, info.height, bands, interpretation == "b-w")


def render(
    header: Any,
    source: Plan,
    spec: JobSpec,
    output_format: OutputFormat,
    limits: Limits,
    *,
    small_copy: bool,
) -> Result:
    """The render ``imaging.render`` would make, for a source ``plan`` accepted.

    Raises ``transforms.GeometryError`` for a crop outside the image, ``pyvips.Error`` for a
    source that cannot be decoded, and ``encoding``'s errors for a result beyond the limits.
    """
    np = _numpy()
    fetched = pyvips.Region.new(header).fetch(0, 0, source.width, source.height)
    pixels = np.frombuffer(fetched, np.uint8).reshape(source.height, source.width, source.bands)
    grey = source.grey
    for step in spec.operations:
        pixels = apply(step, pixels)
        grey = grey or isinstance(step, Grayscale)
    height, width = pixels.shape[:2]
    encoding.check_size(width, height, output_format, limits)
    small = placeholder.rgba_of(pixels) if small_copy else None
    if output_format is OutputFormat.PNG and spec.max_bytes is None:
        data = png(pixels, float(header.xres), float(header.yres))
    else:
        data = encoding.encode(_as_image(pixels, grey, header), output_format, spec)
    return Result(data=data, width=width, height=height, small=small)


def _as_image(pixels: Any, grey: bool, header: Any) -> Any:
    """``pixels`` as a libvips image for a saver, with what savers read of the source's
    header: the resolution and its unit (TIFF writes it in that unit)."""
    height, width, bands = pixels.shape
    data = _numpy().ascontiguousarray(pixels).data
    image = pyvips.Image.new_from_memory(data, width, height, bands, "uchar").copy(
        interpretation="b-w" if grey else "srgb", xres=header.xres, yres=header.yres
    )
    if header.get_typeof("resolution-unit"):
        image.set_type(pyvips.GValue.gstr_type, "resolution-unit", header.get("resolution-unit"))
    return image


def apply(step: Operation, pixels: Any) -> Any:
    """``step`` applied to a height x width x bands array of 8-bit values."""
    match step:
        case Grayscale():
            return grayscale(pixels)
        case Crop():
            check_crop(step, pixels.shape[1], pixels.shape[0])
            return pixels[step.top : step.top + step.height, step.left : step.left + step.width]
        case Flip(direction=Direction.HORIZONTAL):
            return pixels[:, ::-1]
        case Flip():
            return pixels[::-1]
        case Rotate() if step.quarter_turns is not None:
            # libvips' d90 is a clockwise quarter turn; numpy's rot90 turns anticlockwise.
            return _numpy().rot90(pixels, k=-step.quarter_turns)
    raise TypeError(f"{step!r} is not an array step")  # pragma: no cover - ``plan`` checked


def grayscale(pixels: Any) -> Any:
    """``transforms.grayscale`` in numpy, to the bit: alpha kept, grey left as it is.

    libvips' ``linear`` computes each band in double and stores it as float (here a table
    of the 256 values per band); ``bandmean`` sums the bands in float and divides in float;
    ``cast`` truncates (the 0.5 added rounds) and clips.
    """
    np = _numpy()
    if pixels.shape[2] < 3:
        return pixels
    red, green, blue = _luma_tables()
    mean = (red[pixels[..., 0]] + green[pixels[..., 1]] + blue[pixels[..., 2]]) / np.float32(3)
    luma = np.minimum(mean, 255).astype(np.uint8)[..., None]
    if pixels.shape[2] == 4:
        return np.concatenate([luma, pixels[..., 3:]], axis=2)
    return luma


@functools.cache
def _luma_tables() -> tuple[Any, Any, Any]:
    """Each band's term of the luma, ``weight * value + 0.5`` in double stored as float."""
    np = _numpy()
    values = np.arange(256, dtype=np.float64)
    red, green, blue = ((values * weight + 0.5).astype(np.float32) for weight in _LUMA_WEIGHTS)
    return red, green, blue


def png(pixels: Any, xres: float, yres: float) -> bytes:
    """A PNG of ``pixels`` as libvips' ``pngsave`` writes it without metadata: IHDR, the
    resolution (``xres``/``yres`` in pixels per mm), the rows unfiltered, deflated at level 6
    in a window no larger than the data needs (as libpng sizes it)."""
    np = _numpy()
    height, width, bands = pixels.shape
    rows = np.zeros((height, width * bands + 1), np.uint8)  # each row starts with filter 0
    rows[:, 1:] = pixels.reshape(height, width * bands)
    raw = rows.tobytes()
    window = 15
    while window > 9 and len(raw) + 262 <= 1 << (window - 1):
        window -= 1
    deflate = zlib.compressobj(_PNG_LEVEL, zlib.DEFLATED, window)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[bands], 0, 0, 0)
    resolution = struct.pack(">IIB", round(xres * 1000), round(yres * 1000), 1)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"pHYs", resolution),
            _chunk(b"IDAT", deflate.compress(raw) + deflate.flush()),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _is_array_step(step: Operation) -> bool:
    if isinstance(step, Rotate):
        return step.quarter_turns is not None
    return isinstance(step, Grayscale | Crop | Flip)


def _orientation(header: Any) -> int:
    return int(header.get("orientation")) if header.get_typeof("orientation") else 1


def _numpy() -> Any:
    """numpy, imported on first use (as ``placeholder`` does): the API never renders."""
    import numpy

    return numpy
