"""What a client shows while a result loads: BlurHash, ThumbHash and a dominant colour.

All three are computed from one small copy of the result (at most ``SIDE`` px a side),
taken before it is encoded when it is small enough to hold in memory, else decoded back.
The encoders follow the reference implementations (woltapp/blurhash, evanw/thumbhash) and
are checked against independent decoders in the tests; they are pure functions of RGBA
bytes, computed with numpy (a 32 px copy: ~1 ms instead of ~13 ms of Python loops; numpy is
imported on first use, so the API process never loads it).
"""

from __future__ import annotations

import base64
import logging
import math
from typing import Any

import pyvips

from imgstream.jobs import Placeholder

log = logging.getLogger("imgstream.placeholder")

SIDE = 32
"""The small copy's longest side: ample for a 4x3 BlurHash and a 7-term ThumbHash."""
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def of_image(data: bytes) -> Placeholder | None:
    """The placeholder of an encoded image; ``None`` (logged) if it cannot be decoded."""
    try:
        small = pyvips.Image.thumbnail_buffer(data, SIDE, height=SIDE)
        return of_pixels(*rgba_copy(small))
    except pyvips.Error as error:
        log.warning("no placeholder: %s", str(error.detail or error).strip())
        return None


def rgba_copy(image: Any) -> tuple[int, int, bytes]:
    """A copy of an 8-bit image at most ``SIDE`` px a side: width, height, RGBA bytes.

    Read out of libvips once and shrunk by area averaging (weighted by opacity) in numpy:
    each libvips operation costs a tiny image more than its pixels do.
    """
    np = _numpy()
    if image.format != "uchar":
        image = image.cast("uchar")
    height, width, bands = int(image.height), int(image.width), int(image.bands)
    return rgba_of(np.frombuffer(image.write_to_memory(), np.uint8).reshape(height, width, bands))


def rgba_of(pixels: Any) -> tuple[int, int, bytes]:
    """``rgba_copy`` of a height x width x bands array of 8-bit values (1 to 4 bands)."""
    np = _numpy()
    height, width, bands = pixels.shape
    colour = pixels[..., :3] if bands >= 3 else pixels[..., :1]  # grey: one band, shrunk once
    alpha = pixels[..., 3 if bands >= 4 else 1] if bands in (2, 4) else None
    if max(width, height) > SIDE:
        colour, alpha = _shrunk(colour, alpha, width, height)
        height, width = colour.shape[:2]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    opacity = np.full((height, width), 255, np.uint8) if alpha is None else alpha
    rgba = np.concatenate([colour, opacity[..., None]], axis=2).astype(np.uint8)
    return width, height, rgba.tobytes()


def _shrunk(colour: Any, alpha: Any | None, width: int, height: int) -> tuple[Any, Any | None]:
    """``colour`` (and ``alpha``) averaged over blocks to at most ``SIDE`` px a side."""
    np = _numpy()
    longest = max(width, height)
    across = max(1, round(width * SIDE / longest))
    down = max(1, round(height * SIDE / longest))
    rows, cols = np.arange(down) * height // down, np.arange(across) * width // across
    areas = np.outer(np.diff(rows, append=height), np.diff(cols, append=width))

    step_y, step_x = height // down, width // across
    few = height == step_y * down and width == step_x * across and step_y * step_x <= 16

    def mean(values: Any) -> Any:
        # Sums of whole numbers, exact in float64 in any order. A few equal blocks (a 64 px
        # image to 32) are summed as that many strided slices: four times cheaper than reduceat.
        if few:
            slices = [values[y::step_y, x::step_x] for y in range(step_y) for x in range(step_x)]
            summed = sum(slices[1:], start=slices[0])
        else:
            summed = np.add.reduceat(np.add.reduceat(values, rows, axis=0), cols, axis=1)
        return summed / (areas if values.ndim == 2 else areas[..., None])

    if alpha is None:
        return np.rint(mean(colour.astype(np.float64))), None
    weight = alpha.astype(np.float64)
    opacity = mean(weight)
    premultiplied = mean(colour * weight[..., None])
    safe = np.where(opacity > 0, opacity, 1)[..., None]
    return np.rint(np.clip(premultiplied / safe, 0, 255)), np.rint(opacity)


def of_pixels(width: int, height: int, rgba: bytes) -> Placeholder:
    """The placeholder of a small RGBA image (see ``rgba_copy``)."""
    return Placeholder(
        blurhash=blurhash(width, height, rgba),
        thumbhash=base64.b64encode(thumbhash(width, height, rgba)).decode("ascii"),
        dominant_color=dominant_color(rgba),
    )


def dominant_color(rgba: bytes) -> str:
    """``#rrggbb``: the mean of the most common colour (16 levels a channel), by opacity
    (of equally common ones, the first met, row by row)."""
    np = _numpy()
    pixels = np.frombuffer(rgba, np.uint8).reshape(-1, 4).astype(np.int64)
    pixels = pixels[pixels[:, 3] > 0]
    if not len(pixels):
        return "#000000"
    levels = pixels[:, :3] >> 4
    bucket = levels[:, 0] << 8 | levels[:, 1] << 4 | levels[:, 2]
    weights = np.bincount(bucket, weights=pixels[:, 3], minlength=4096)
    common = np.flatnonzero(weights == weights.max())
    firsts = [int(np.argmax(bucket == candidate)) for candidate in common]
    chosen = int(bucket[min(firsts)])
    mine = pixels[bucket == chosen]
    weight = float(weights[chosen])
    sums = (mine[:, :3] * mine[:, 3:]).sum(axis=0)
    return "#" + "".join(f"{round(float(value) / weight):02x}" for value in sums)


# BlurHash: https://github.com/woltapp/blurhash/blob/master/Algorithm.md


def blurhash(width: int, height: int, rgba: bytes) -> str:
    """The BlurHash of an RGBA image, flattened on white; 4x3 terms (3x4 if portrait)."""
    np = _numpy()
    across, down = (3, 4) if height > width else (4, 3)
    pixels = np.frombuffer(rgba, np.uint8).reshape(height, width, 4).astype(np.float64)
    alpha = pixels[..., 3:] / 255
    value = (pixels[..., :3] * alpha + 255 * (1 - alpha)) / 255
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)
    factors = []
    for j in range(down):
        fy = np.cos(math.pi * j * np.arange(height) / height)
        for i in range(across):
            norm = (1 if i == j == 0 else 2) / (width * height)
            fx = np.cos(math.pi * i * np.arange(width) / width)
            factors.append([norm * float(fy @ linear[..., band] @ fx) for band in range(3)])
    dc, ac = factors[0], factors[1:]
    text = _base83((across - 1) + (down - 1) * 9, 1)
    if ac:
        actual = max(abs(value) for factor in ac for value in factor)
        quantised = int(max(0, min(82, math.floor(actual * 166 - 0.5))))
        maximum = (quantised + 1) / 166
    else:
        quantised, maximum = 0, 1.0
    text += _base83(quantised, 1)
    red, green, blue = (_linear_to_srgb(value) for value in dc)
    text += _base83((red << 16) + (green << 8) + blue, 4)
    for factor in ac:
        r, g, b = (
            int(max(0, min(18, math.floor(_sign_pow(value / maximum, 0.5) * 9 + 9.5))))
            for value in factor
        )
        text += _base83(r * 19 * 19 + g * 19 + b, 2)
    return text


def _numpy() -> Any:
    """numpy, imported on first use: the API process, which never makes a placeholder, does
    not load it (``tests/test_memory.py``)."""
    import numpy

    return numpy


def _linear_to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exponent: float) -> float:
    return math.copysign(abs(value) ** exponent, value)


def _base83(value: int, length: int) -> str:
    return "".join(
        _BASE83[(value // 83 ** (length - place)) % 83] for place in range(1, length + 1)
    )


# ThumbHash: https://github.com/evanw/thumbhash (rgbaToThumbHash)


def thumbhash(width: int, height: int, rgba: bytes) -> bytes:
    """The ThumbHash bytes of an RGBA image of at most 100x100 px."""
    np = _numpy()
    count = width * height
    pixels = np.frombuffer(rgba, np.uint8).reshape(height, width, 4).astype(np.float64)
    alphas = pixels[..., 3] / 255
    total_alpha = float(alphas.sum())
    weighted = alphas[..., None] / 255 * pixels[..., :3]
    average = weighted.sum(axis=(0, 1)) / (total_alpha or 1)
    has_alpha = total_alpha < count
    limit = 5 if has_alpha else 7
    lx = max(1, _round(limit * width / max(width, height)))
    ly = max(1, _round(limit * height / max(width, height)))
    red, green, blue = np.moveaxis(average * (1 - alphas[..., None]) + weighted, -1, 0)
    lum, yellow_blue, red_green = (red + green + blue) / 3, (red + green) / 2 - blue, red - green

    def encode(channel: Any, nx: int, ny: int) -> tuple[float, list[float], float]:
        dc, ac, scale = 0.0, [], 0.0
        for cy in range(ny):
            fy = np.cos(math.pi / height * cy * (np.arange(height) + 0.5))
            cx = 0
            while cx * ny < nx * (ny - cy):
                fx = np.cos(math.pi / width * cx * (np.arange(width) + 0.5))
                f = float(fy @ channel @ fx) / count
                if cx or cy:
                    ac.append(f)
                    scale = max(scale, abs(f))
                else:
                    dc = f
                cx += 1
        if scale:
            ac = [0.5 + 0.5 / scale * f for f in ac]
        return dc, ac, scale

    l_dc, l_ac, l_scale = encode(lum, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = encode(yellow_blue, 3, 3)
    q_dc, q_ac, q_scale = encode(red_green, 3, 3)
    landscape = width > height
    header24 = (
        _round(63 * l_dc)
        | (_round(31.5 + 31.5 * p_dc) << 6)
        | (_round(31.5 + 31.5 * q_dc) << 12)
        | (_round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    header16 = (
        (ly if landscape else lx)
        | (_round(63 * p_scale) << 3)
        | (_round(63 * q_scale) << 9)
        | (int(landscape) << 15)
    )
    data = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    terms = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = encode(alphas, 5, 5)
        data.append(_round(15 * a_dc) | (_round(15 * a_scale) << 4))
        terms.append(a_ac)
    start = len(data)
    factors = [f for term in terms for f in term]
    data.extend([0] * ((len(factors) + 1) // 2))
    for index, f in enumerate(factors):
        data[start + (index >> 1)] |= _round(15 * f) << ((index & 1) << 2)
    return bytes(data)


def _round(value: float) -> int:
    """JavaScript's ``Math.round``: halves go up (Python's ``round`` goes to even)."""
    return math.floor(value + 0.5)
