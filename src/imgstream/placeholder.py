"""What a client shows while a result loads: BlurHash, ThumbHash and a dominant colour.

All three are computed from one small copy of the result (at most ``SIDE`` px a side),
taken before it is encoded when it is small enough to hold in memory, else decoded back.
The encoders follow the reference implementations (woltapp/blurhash, evanw/thumbhash) and
are checked against independent decoders in the tests; they are pure functions of RGBA
bytes.
"""

from __future__ import annotations

import base64
import logging
import math
from collections import Counter
from collections.abc import Sequence
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
    """A copy of an image at most ``SIDE`` px a side: width, height, 8-bit RGBA bytes."""
    if max(image.width, image.height) > SIDE:
        image = image.thumbnail_image(SIDE, height=SIDE)
    if image.bands < 3:
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.bandjoin(255)
    image = image.cast("uchar")
    return int(image.width), int(image.height), bytes(image.write_to_memory())


def of_pixels(width: int, height: int, rgba: bytes) -> Placeholder:
    """The placeholder of a small RGBA image (see ``rgba_copy``)."""
    return Placeholder(
        blurhash=blurhash(width, height, rgba),
        thumbhash=base64.b64encode(thumbhash(width, height, rgba)).decode("ascii"),
        dominant_color=dominant_color(rgba),
    )


def dominant_color(rgba: bytes) -> str:
    """``#rrggbb``: the mean of the most common colour (16 levels a channel), by opacity."""
    weights: Counter[tuple[int, int, int]] = Counter()
    sums: dict[tuple[int, int, int], list[float]] = {}
    for index in range(0, len(rgba), 4):
        red, green, blue, alpha = rgba[index : index + 4]
        if alpha == 0:
            continue
        bucket = (red >> 4, green >> 4, blue >> 4)
        weights[bucket] += alpha
        total = sums.setdefault(bucket, [0.0, 0.0, 0.0])
        total[0] += red * alpha
        total[1] += green * alpha
        total[2] += blue * alpha
    if not weights:
        return "#000000"
    bucket, weight = weights.most_common(1)[0]
    return "#" + "".join(f"{round(value / weight):02x}" for value in sums[bucket])


# BlurHash: https://github.com/woltapp/blurhash/blob/master/Algorithm.md


def blurhash(width: int, height: int, rgba: bytes) -> str:
    """The BlurHash of an RGBA image, flattened on white; 4x3 terms (3x4 if portrait)."""
    across, down = (3, 4) if height > width else (4, 3)
    channels = []
    for band in range(3):
        linear = []
        for index in range(0, len(rgba), 4):
            alpha = rgba[index + 3] / 255
            value = rgba[index + band] * alpha + 255 * (1 - alpha)
            linear.append(_srgb_to_linear(value))
        channels.append(linear)
    factors = []
    for j in range(down):
        for i in range(across):
            norm = (1 if i == j == 0 else 2) / (width * height)
            fx = [math.cos(math.pi * i * x / width) for x in range(width)]
            fy = [math.cos(math.pi * j * y / height) for y in range(height)]
            factors.append([norm * _project(channel, fx, fy, width) for channel in channels])
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


def _project(channel: Sequence[float], fx: Sequence[float], fy: Sequence[float], w: int) -> float:
    total = 0.0
    for y, weight in enumerate(fy):
        row = channel[y * w : (y + 1) * w]
        total += weight * sum(value * basis for value, basis in zip(row, fx, strict=True))
    return total


def _srgb_to_linear(value: float) -> float:
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


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
    count = width * height
    alphas = [rgba[index + 3] / 255 for index in range(0, 4 * count, 4)]
    total_alpha = sum(alphas)
    average = [0.0, 0.0, 0.0]
    for band in range(3):
        average[band] = sum(alphas[i] / 255 * rgba[4 * i + band] for i in range(count)) / (
            total_alpha or 1
        )
    has_alpha = total_alpha < count
    limit = 5 if has_alpha else 7
    lx = max(1, _round(limit * width / max(width, height)))
    ly = max(1, _round(limit * height / max(width, height)))
    lum, yellow_blue, red_green = [], [], []
    for i in range(count):
        alpha = alphas[i]
        r, g, b = (
            average[band] * (1 - alpha) + alpha / 255 * rgba[4 * i + band] for band in range(3)
        )
        lum.append((r + g + b) / 3)
        yellow_blue.append((r + g) / 2 - b)
        red_green.append(r - g)

    def encode(channel: list[float], nx: int, ny: int) -> tuple[float, list[float], float]:
        dc, ac, scale = 0.0, [], 0.0
        for cy in range(ny):
            cx = 0
            while cx * ny < nx * (ny - cy):
                fx = [math.cos(math.pi / width * cx * (x + 0.5)) for x in range(width)]
                fy = [math.cos(math.pi / height * cy * (y + 0.5)) for y in range(height)]
                f = _project(channel, fx, fy, width) / count
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
