"""What each operation should produce, computed without libvips (Pillow decodes, numpy does the
arithmetic), so that end-to-end tests catch imaging bugs instead of repeating them.

The definitions are the documented ones: resize is Lanczos-3 (Pillow's ``LANCZOS``), cover
crops the centre, fill stretches; grayscale is Rec. 601 luma rounded; blur is the libvips
Gaussian: sampled at whole pixels, cut where it falls below a fifth of its peak
(``gaussblur``'s ``min_ampl`` of 0.2), normalised, edges repeated.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image

from imgstream.operations import Blur, Fit, Grayscale, Operation, Resize

Pixels = Any
"""A numpy float array, height x width (x bands)."""

REC601 = (0.299, 0.587, 0.114)
BLUR_MIN_AMPLITUDE = 0.2


def pixels(data: bytes) -> Pixels:
    """Decode with Pillow, as floats."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.float64)


def frames(data: bytes) -> list[Pixels]:
    """Every frame of an animation, as RGB floats."""
    found = []
    with Image.open(io.BytesIO(data)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            found.append(np.asarray(image.convert("RGB")).astype(np.float64))
    return found


def apply(steps: tuple[Operation, ...] | list[Operation], source: Pixels) -> Pixels:
    """The expected pixels after ``steps``, each step rounded to 8 bits as the service does."""
    image = source
    for step in steps:
        image = np.clip(np.floor(_apply(step, image) + 0.5), 0, 255)
    return image


def _apply(step: Operation, image: Pixels) -> Pixels:
    if isinstance(step, Resize):
        return resize(image, step)
    if isinstance(step, Grayscale):
        return grayscale(image)
    if isinstance(step, Blur):
        return blur(image, step.sigma)
    raise TypeError(f"no reference for {step!r}")


def grayscale(image: Pixels) -> Pixels:
    if image.ndim == 2:
        return image
    return image[..., :3] @ np.array(REC601)


def blur(image: Pixels, sigma: float) -> Pixels:
    radius = math.floor(sigma * math.sqrt(-2 * math.log(BLUR_MIN_AMPLITUDE)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    rows = np.apply_along_axis(lambda line: np.convolve(line, kernel, "valid"), 0, padded)
    return np.apply_along_axis(lambda line: np.convolve(line, kernel, "valid"), 1, rows)


def resize(image: Pixels, step: Resize) -> Pixels:
    height, width = image.shape[:2]
    if step.width and step.height and step.fit is Fit.FILL:
        return _lanczos(image, step.width, step.height)
    if step.width and step.height and step.fit is Fit.COVER:
        scale = max(step.width / width, step.height / height)
        wide, high = round(width * scale), round(height * scale)
        left, top = (wide - step.width) // 2, (high - step.height) // 2
        scaled = _lanczos(image, wide, high)
        return scaled[top : top + step.height, left : left + step.width]
    scale = min(
        step.width / width if step.width else math.inf,
        step.height / height if step.height else math.inf,
    )
    if not step.enlarge:
        scale = min(scale, 1.0)
    return _lanczos(image, round(width * scale), round(height * scale))


def _lanczos(image: Pixels, width: int, height: int) -> Pixels:
    bands = [image] if image.ndim == 2 else [image[..., band] for band in range(image.shape[2])]
    scaled = [
        np.asarray(
            Image.fromarray(band.astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for band in bands
    ]
    return scaled[0] if image.ndim == 2 else np.stack(scaled, axis=-1)


def mean_difference(got: Pixels, want: Pixels, margin: int = 0) -> float:
    """Mean absolute difference, optionally ignoring ``margin`` pixels at every edge."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if margin:
        got, want = got[margin:-margin, margin:-margin], want[margin:-margin, margin:-margin]
    return float(np.abs(got - want).mean())
