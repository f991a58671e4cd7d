"""Decode, transform and encode images with libvips: a file or bytes in, bytes out.

Every failure caused by the input is an ``ImagingError`` (``image_errors``) whose message is
meant for a person; anything else (a missing file, a bug) propagates unchanged. ``decoding``
opens and checks the source and decodes it for the first steps, ``transforms`` applies each
step, ``encoding`` writes the result; this module runs them in order under a deadline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

from imgstream import decoding, encoding, placeholder, tiny
from imgstream.decoding import SourceInfo
from imgstream.image_errors import (
    DecodeError,
    ImagingError,
    LimitExceeded,
    OutsideImage,
    RenderTimeout,
    TooManyBytes,
    UnsupportedFormat,
)
from imgstream.operations import JobSpec, Limits, OutputFormat
from imgstream.transforms import GeometryError, apply

__all__ = [
    "SMALL_COPY_PIXELS",
    "DecodeError",
    "ImagingError",
    "LimitExceeded",
    "OutsideImage",
    "RenderTimeout",
    "Rendered",
    "SourceInfo",
    "TooManyBytes",
    "UnsupportedFormat",
    "configure",
    "default_output_format",
    "probe",
    "render",
]

_KEPT_FORMATS = {"jpeg": OutputFormat.JPEG, "png": OutputFormat.PNG, "webp": OutputFormat.WEBP}
SMALL_COPY_PIXELS = 4_000_000
"""The largest result held in memory for its small copy (16 MB of RGBA); a larger one is
encoded as it streams and decoded again for its placeholder."""


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    width: int
    height: int
    format: OutputFormat
    small: tuple[int, int, bytes] | None = None
    """With ``small_copy``: the result at most 32 px a side, as ``placeholder.rgba_copy``."""


def configure(*, concurrency: int, cache_max_mem_mb: int, allow_untrusted: bool = False) -> None:
    """Set libvips threads and cache bounds for this process, and block untrusted loaders.

    SVG, PDF and the like can reference outside resources: libvips blocks them and the
    allowlist refuses them, unless the operator chose ``allow_untrusted``.
    """
    pyvips.concurrency_set(concurrency)
    pyvips.cache_set_max_mem(cache_max_mem_mb * 1024 * 1024)
    pyvips.cache_set_max(100 if cache_max_mem_mb > 0 else 0)
    pyvips.block_untrusted_set(not allow_untrusted)
    decoding.accept_untrusted(allow_untrusted)
    # libvips reports every thumbnail and thread pool at INFO: lines per job, and CPU.
    logging.getLogger("pyvips").setLevel(logging.WARNING)


def default_output_format(source_format: str) -> OutputFormat:
    """JPEG, PNG and WebP keep their format; anything else becomes PNG."""
    return _KEPT_FORMATS.get(source_format, OutputFormat.PNG)


def probe(source: Path | bytes, limits: Limits) -> SourceInfo:
    """Read the header only and check the format and the limits; no pixel is decoded.

    Raises ``UnsupportedFormat``, ``LimitExceeded`` or ``DecodeError``.
    """
    return decoding.check_source(decoding.open_header(source), limits)


def render(
    source: Path | bytes,
    spec: JobSpec,
    limits: Limits,
    *,
    timeout: float | None = None,
    small_copy: bool = False,
) -> Rendered:
    """Check the source like ``probe``, apply the steps in order, encode.

    EXIF orientation is applied first, so sizes refer to the image as displayed. Colours
    become 8-bit sRGB or grey. Only the first frame of an animated or multi-page source is
    processed. Transparency is flattened on white for JPEG. With ``spec.strip`` (the
    default) no metadata is kept; without, EXIF, XMP and IPTC are kept, with the
    orientation reset since it has been applied. Problems with the input, and a result
    beyond the limits, raise ``ImagingError`` subclasses, however late libvips finds them.
    With a ``timeout`` (seconds), libvips is told to stop computing once it has passed, and
    ``RenderTimeout`` is raised. With ``small_copy``, a result of at most
    ``SMALL_COPY_PIXELS`` is held in memory and ``Rendered.small`` is a tiny copy of it
    (for placeholders, without decoding the result again). A tiny source whose steps are
    array operations is rendered in memory instead (``tiny``), to the same result.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    watched: list[Any] = []

    def stoppable(image: Any) -> Any:
        """``image`` to compute under the deadline, its watch kept alive until rendering is over.

        Images computed from a watched one (its copy in memory too) report their progress
        through it: were it freed, libvips would call back into freed memory.
        """
        if deadline is None:
            return image
        target = _stoppable(image, deadline)
        watched.append(target)
        return target

    def materialise(image: Any) -> Any:
        return stoppable(image).copy_memory()

    header = decoding.open_header(source)
    info = decoding.check_source(header, limits)
    output_format = spec.format or default_output_format(info.format)
    try:
        tiny_source = tiny.plan(header, info, spec, output_format, limits)
        if tiny_source is not None:
            result = tiny.render(
                header, tiny_source, spec, output_format, limits, small_copy=small_copy
            )
            return Rendered(result.data, result.width, result.height, output_format, result.small)
        steps = list(spec.operations)
        image, steps = decoding.decode(source, header, info, steps, limits, luma_allowed=spec.strip)
        for step in steps:
            image = apply(step, image, materialise)
        if output_format is OutputFormat.JPEG and image.hasalpha():
            image = image.flatten(background=[255])
        encoding.check_output(image, output_format, limits)
        if not spec.strip:
            image = image.copy()
            image.set_type(pyvips.GValue.gint_type, "orientation", 1)
        small = None
        held = small_copy and image.width * image.height <= SMALL_COPY_PIXELS
        if spec.max_bytes is not None or held:
            image = materialise(image)  # encoded more than once, or copied small too
        if held:
            small = placeholder.rgba_copy(image)
        data = encoding.encode(stoppable(image), output_format, spec)
    except GeometryError as error:
        raise OutsideImage(str(error)) from None
    except pyvips.Error as error:
        if deadline is not None and time.monotonic() > deadline:
            raise RenderTimeout(f"rendering took longer than {timeout:g} s") from None
        raise decoding.input_error(error, source) from None
    return Rendered(
        data=data,
        width=int(image.width),
        height=int(image.height),
        format=output_format,
        small=small,
    )


def _stoppable(image: Any, deadline: float) -> Any:
    """A fresh copy of ``image`` that libvips abandons computing once ``deadline`` has passed.

    The watch goes on a copy that only the returned object holds: pyvips keeps a signal's
    callback alive only as long as the Python object it was connected through, while the
    libvips image can outlive it (``copy_memory`` of an image already in memory returns that
    same image), and libvips calling a callback that Python has freed aborts the process (a
    worker crashed on ``rotate`` by 0 of a small image).
    """
    target = image.copy()

    def check(computing: Any, _progress: Any) -> None:
        if time.monotonic() > deadline:
            computing.set_kill(True)

    target.set_progress(True)
    target.signal_connect("eval", check)
    return target
