"""The operator's limits on what a job may ask for and what a source image may be.

This is their one definition, defaults included: ``Settings`` takes its defaults from
``DEFAULT_LIMITS`` (and bounds them), the API serves them on ``GET /api/limits``, and the web
page learns them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Limits:
    """Operator-set bounds on what a job may ask for and what a source image may be."""

    max_steps: int = 10
    max_sigma: float = 100.0
    max_dimension: int = 20_000
    max_pixels: int = 50_000_000
    max_frames: int = 100
    max_luma_pixels: int = 24_000_000
    """The largest luma plane a grayscale of a JPEG decodes whole (one byte a pixel); larger
    ones are decoded by libvips in strips. 0: never."""
    max_tiny_pixels: int = 65_536
    """The largest source (by its header) rendered in memory by numpy when its steps allow
    (``tiny``), for a fraction of libvips' fixed cost per operation. 0: never."""


DEFAULT_LIMITS = Limits()
LIMIT_NAMES = tuple(field.name for field in fields(Limits))
"""The limits' names: each is also a setting (``IMGSTREAM_<NAME>``)."""
