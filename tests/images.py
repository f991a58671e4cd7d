"""Small synthetic images built with pyvips itself, for any test that needs real pixels."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import pyvips

_SUFFIXES = {
    "jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "gif": ".gif",
    "tiff": ".tif",
    "avif": ".avif",
}

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
    b'<rect width="40" height="30" fill="red"/></svg>'
)


def photo(width: int, height: int, seed: int = 7) -> Any:
    """A photo-like 8-bit sRGB image: colour gradients plus noise, the same for the same seed."""
    xy = pyvips.Image.xyz(width, height)
    red = xy[0] * (255 / max(width - 1, 1))
    green = xy[1] * (255 / max(height - 1, 1))
    blue = 255 - (xy[0] + xy[1]) * (255 / max(width + height - 2, 1))
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, mean=0, seed=seed)
    return (red.bandjoin([green, blue]) + noise).cast("uchar").copy(interpretation="srgb")


def bars(width: int, height: int, period: int = 16) -> Any:
    """Hard-edged vertical colour bars: where a blur's width shows (a gradient blurs to itself)."""
    x = pyvips.Image.xyz(width, height)[0]
    on = ((x / period).floor().cast("int") & 1) * 255
    return on.bandjoin([255 - on, on * 0.5]).cast("uchar").copy(interpretation="srgb")


def flat(width: int, height: int, colour: Sequence[float]) -> Any:
    """A single-colour 8-bit image; three values give sRGB, four sRGB with alpha."""
    image = pyvips.Image.black(width, height, bands=len(colour)) + list(colour)
    return image.cast("uchar").copy(interpretation="srgb" if len(colour) >= 3 else "b-w")


def encode(image: Any, fmt: str, **options: Any) -> bytes:
    """Encode in memory; ``fmt`` is jpeg, png, webp, gif, tiff or avif."""
    data: bytes = image.write_to_buffer(_SUFFIXES[fmt], **options)
    return data


def with_orientation(image: Any, orientation: int) -> bytes:
    """A JPEG of the stored pixels whose EXIF says to show them turned (6: 90 degrees clockwise)."""
    tagged = image.copy()
    tagged.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return encode(tagged, "jpeg")


def cmyk_jpeg(image: Any, *, embed_profile: bool) -> bytes:
    """A CMYK JPEG, with its ICC profile embedded or with none (libvips' default CMYK then)."""
    cmyk = image.icc_transform("cmyk") if embed_profile else image.colourspace("cmyk")
    return encode(cmyk, "jpeg", keep="icc" if embed_profile else "none")


def display_p3(image: Any, fmt: str = "png") -> bytes:
    """``image`` (sRGB) converted to Display P3 and saved with that profile: other numbers in
    the file, the same colours on a screen that reads the profile."""
    return encode(image.icc_transform("p3"), fmt, keep="icc")


def png16(image: Any) -> bytes:
    """A 16-bit-per-channel PNG of an 8-bit sRGB image (same colours)."""
    wide = (image.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    return encode(wide, "png")


def with_alpha(image: Any, alpha: int) -> bytes:
    """A PNG of ``image`` with a uniform alpha channel (0: fully transparent)."""
    return encode(image.bandjoin(alpha), "png")


def animated_gif(frames: int, width: int, height: int) -> bytes:
    """A GIF with ``frames`` frames, each a differently seeded ``photo``."""
    strip = pyvips.Image.arrayjoin([photo(width, height, seed) for seed in range(frames)], across=1)
    strip = strip.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return encode(strip, "gif")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's header."""
    data = bytearray(encode(flat(8, 8, [0, 0, 0]), "png"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def decode(data: bytes) -> Any:
    """Decode encoded bytes fully into memory, so it can be read many times."""
    return pyvips.Image.new_from_buffer(data, "").copy_memory()
