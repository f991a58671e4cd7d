"""Decode, transform and encode images with libvips: a file or bytes in, bytes out.

Every failure caused by the input is an ``ImagingError`` whose message is meant for a person;
anything else (a missing file, a bug) propagates unchanged. Sources are read sequentially with
strict decoding, and the limits are checked on the header before any pixel is decoded.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

from imgstream.operations import (
    Blur,
    Fit,
    Grayscale,
    JobSpec,
    Limits,
    Operation,
    OutputFormat,
    Resize,
)

_LOADER_FORMATS = {
    "jpegload": "jpeg",
    "uhdrload": "jpeg",  # libvips picks it for JPEGs carrying a gain map (Ultra HDR, some MPO)
    "pngload": "png",
    "webpload": "webp",
    "gifload": "gif",
    "tiffload": "tiff",
    "heifload": "heif",  # HEIC and AVIF
}
_UNTRUSTED_LOADER_FORMATS = {"svgload": "svg", "pdfload": "pdf"}
_accepted_loaders = dict(_LOADER_FORMATS)
"""Loaders this process accepts; ``configure`` adds the untrusted ones when told to."""
_KEPT_FORMATS = {"jpeg": OutputFormat.JPEG, "png": OutputFormat.PNG, "webp": OutputFormat.WEBP}
_FORMAT_MAX_SIDE = {OutputFormat.JPEG: 65_535, OutputFormat.WEBP: 16_383}
_SAVE_OPTIONS: dict[OutputFormat, tuple[str, dict[str, Any]]] = {
    OutputFormat.JPEG: (".jpg", {"Q": 85, "optimize_coding": False}),
    OutputFormat.PNG: (".png", {"compression": 6}),
    OutputFormat.WEBP: (".webp", {"Q": 80}),
    OutputFormat.TIFF: (".tif", {"compression": "deflate"}),
}
_NO_METADATA: dict[str, Any] = (
    {"keep": "none"} if pyvips.at_least_libvips(8, 15) else {"strip": True}
)
_LOAD_OPTIONS = "fail_on=error"  # refuse truncated or corrupt data rather than invent pixels
_UNBOUNDED = 10_000_000  # libvips' largest coordinate: no constraint on that side
_REC601_LUMA_X3 = [3 * 0.299, 3 * 0.587, 3 * 0.114]  # see _grayscale

_UNSUPPORTED = (
    "the file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF)"
)
_NOT_AN_IMAGE = re.compile(r"not in a known format|is not a known")
_MISSING_CODEC = re.compile(
    r"not been built in|support is not configured|data precision|not supported"
)
_NOISE = re.compile(r"^source: bad seek|^unable to (call|load|write)|: unable to write to")


class ImagingError(Exception):
    """A deterministic failure caused by the input: retrying will not help."""

    code: str = "imaging_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormat(ImagingError):
    """Not an image in a format we accept, or one using a codec this build lacks."""

    code = "unsupported_format"


class LimitExceeded(ImagingError):
    """The source or the result is beyond the operator's limits; the message names the setting."""

    code = "limit_exceeded"


class DecodeError(ImagingError):
    """The image is truncated or corrupt."""

    code = "decode_error"


class RenderTimeout(Exception):
    """Rendering was stopped at its deadline. Not an input error: another attempt may finish."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the header says; width and height are as displayed, after EXIF orientation."""

    format: str
    width: int
    height: int
    pages: int


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    width: int
    height: int
    format: OutputFormat


def configure(*, concurrency: int, cache_max_mem_mb: int, allow_untrusted: bool = False) -> None:
    """Set libvips threads and cache bounds for this process, and block untrusted loaders.

    SVG, PDF and the like can reference outside resources: libvips blocks them and the
    allowlist refuses them, unless the operator chose ``allow_untrusted``.
    """
    pyvips.concurrency_set(concurrency)
    pyvips.cache_set_max_mem(cache_max_mem_mb * 1024 * 1024)
    pyvips.cache_set_max(100 if cache_max_mem_mb > 0 else 0)
    pyvips.block_untrusted_set(not allow_untrusted)
    _accepted_loaders.clear()
    _accepted_loaders.update(_LOADER_FORMATS)
    if allow_untrusted:
        _accepted_loaders.update(_UNTRUSTED_LOADER_FORMATS)
    # libvips reports every thumbnail and thread pool at INFO: lines per job, and CPU.
    logging.getLogger("pyvips").setLevel(logging.WARNING)


def default_output_format(source_format: str) -> OutputFormat:
    """JPEG, PNG and WebP keep their format; anything else becomes PNG."""
    return _KEPT_FORMATS.get(source_format, OutputFormat.PNG)


def probe(source: Path | bytes, limits: Limits) -> SourceInfo:
    """Read the header only and check the format and the limits; no pixel is decoded.

    Raises ``UnsupportedFormat``, ``LimitExceeded`` or ``DecodeError``.
    """
    return _check_source(_open_header(source), limits)


def render(
    source: Path | bytes, spec: JobSpec, limits: Limits, *, timeout: float | None = None
) -> Rendered:
    """Check the source like ``probe``, apply the steps in order, encode without metadata.

    EXIF orientation is applied first, so sizes refer to the image as displayed. Colours
    become 8-bit sRGB or grey. Only the first frame of an animated or multi-page source is
    processed. Transparency is flattened on white for JPEG. Problems with the input, and a
    result beyond the limits, raise ``ImagingError`` subclasses, however late libvips finds them.
    With a ``timeout`` (seconds), libvips is told to stop computing once it has passed, and
    ``RenderTimeout`` is raised.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _open_header(source)
    info = _check_source(header, limits)
    output_format = spec.format or default_output_format(info.format)
    steps = list(spec.operations)
    try:
        first = steps[0]
        if isinstance(first, Resize):  # decode straight to the smaller size
            width, options = _thumbnail_box(first, info.width, info.height)
            shrink = _jpeg_shrink(header, info, width, options)
            if shrink > 1:
                image = _load_shrunk(source, shrink).thumbnail_image(width, **options)
            else:
                image = _as_8bit(_load(source, header, width, options))
            steps = steps[1:]
        elif _needs_conversion(header):
            options = {"height": _UNBOUNDED, "size": "down"}
            image = _as_8bit(_load(source, header, _UNBOUNDED, options))
        else:  # already upright 8-bit sRGB or grey: decode through the open header
            image = header
        for step in steps:
            image = _apply(step, image)
        if output_format is OutputFormat.JPEG and image.hasalpha():
            image = image.flatten(background=[255])
        _check_output(image, output_format, limits)
        suffix, save_options = _SAVE_OPTIONS[output_format]
        if deadline is not None:
            _stop_at(image, deadline)
        data = image.write_to_buffer(suffix, **save_options, **_NO_METADATA)
    except pyvips.Error as error:
        if deadline is not None and time.monotonic() > deadline:
            raise RenderTimeout(f"rendering took longer than {timeout:g} s") from None
        raise _input_error(error, source) from None
    return Rendered(
        data=data, width=int(image.width), height=int(image.height), format=output_format
    )


def _stop_at(image: Any, deadline: float) -> None:
    """Have libvips abandon the computation of ``image`` once ``deadline`` has passed."""

    def check(computing: Any, _progress: Any) -> None:
        if time.monotonic() > deadline:
            computing.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", check)


def _open_header(source: Path | bytes) -> Any:
    """Open lazily: libvips reads the header now and decodes pixels only when they are asked for."""
    _clear_libvips_errors()
    try:
        if isinstance(source, bytes):
            return pyvips.Image.new_from_buffer(source, _LOAD_OPTIONS, access="sequential")
        return pyvips.Image.new_from_source(
            _file_source(source), _LOAD_OPTIONS, access="sequential"
        )
    except pyvips.Error as error:
        raise _input_error(error, source) from None


def _check_source(header: Any, limits: Limits) -> SourceInfo:
    loader = re.sub(r"_(source|buffer|file)$", "", str(header.get("vips-loader")))
    if loader not in _accepted_loaders:
        raise UnsupportedFormat(_UNSUPPORTED)
    width, height = int(header.width), int(header.height)
    pages = int(header.get("n-pages")) if header.get_typeof("n-pages") else 1
    if width * height > limits.max_pixels:
        raise LimitExceeded(
            f"the image has {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} (IMGSTREAM_MAX_PIXELS)"
        )
    if max(width, height) > limits.max_dimension:
        raise LimitExceeded(
            f"the image is {width}x{height}; no side may exceed "
            f"{limits.max_dimension} px (IMGSTREAM_MAX_DIMENSION)"
        )
    if pages > limits.max_frames:
        raise LimitExceeded(
            f"the image has {pages} frames or pages; "
            f"the limit is {limits.max_frames} (IMGSTREAM_MAX_FRAMES)"
        )
    orientation = int(header.get("orientation")) if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):  # turned by 90 degrees when displayed
        width, height = height, width
    return SourceInfo(format=_accepted_loaders[loader], width=width, height=height, pages=pages)


def _needs_conversion(header: Any) -> bool:
    """Whether decoding must go through ``thumbnail`` even without a resize.

    It must when the image is to be turned (EXIF orientation), carries an ICC profile, or is
    anything but 8-bit sRGB or grey: rotating a sequentially read image afterwards
    (``autorot``) fails with "out of order read". Other images are read through the header
    already open, which saves a second open and, for small images, most of the cost.
    """
    orientation = int(header.get("orientation")) if header.get_typeof("orientation") else 1
    return (
        orientation != 1
        or bool(header.get_typeof("icc-profile-data"))
        or header.interpretation not in ("srgb", "b-w")
        or header.format != "uchar"
        or header.bands > 4
    )


def _jpeg_shrink(header: Any, info: SourceInfo, width: int, options: dict[str, Any]) -> int:
    """The JPEG decoding scale (2, 4 or 8) for a resize to ``width``/``options``, or 1.

    The largest one that keeps the decoded image at least as large as the result, as Pillow's
    ``draft`` and OpenCV's ``IMREAD_REDUCED_*`` choose; ``thumbnail`` keeps twice that, which
    costs up to four times the decoding (a 7360x4912 photo to 500x500: 1840 wide, not 920).
    libjpeg's scaled decoding low-passes in the DCT domain, and the final reduce still has
    at least the remaining factor to work with. Only for plain JPEGs (see ``_needs_conversion``).
    """
    loader = str(header.get("vips-loader"))
    if not loader.startswith("jpegload") or options["size"] == "both" or _needs_conversion(header):
        return 1
    across, down = info.width / width, info.height / options["height"]
    # How much smaller than the source the result is: inside fits the box (the larger ratio
    # decides), cover and fill must cover it on both axes (the smaller ratio).
    room = (
        min(across, down) if options["size"] == "force" or "crop" in options else max(across, down)
    )
    # Never below one pixel on the short side (libjpeg would make a 20000x1 strip 0 px tall).
    room = min(room, info.width, info.height)
    return next((factor for factor in (8, 4, 2) if factor <= room), 1)


def _load_shrunk(source: Path | bytes, shrink: int) -> Any:
    if isinstance(source, bytes):
        return pyvips.Image.new_from_buffer(
            source, _LOAD_OPTIONS, access="sequential", shrink=shrink
        )
    return pyvips.Image.new_from_source(
        _file_source(source), _LOAD_OPTIONS, access="sequential", shrink=shrink
    )


def _load(source: Path | bytes, header: Any, width: int, options: dict[str, Any]) -> Any:
    """Decode through ``thumbnail``: shrink-on-load, EXIF rotation, CMYK/ICC/16-bit to sRGB."""
    if header.get_typeof("icc-profile-data"):
        options = {**options, "export_profile": "srgb"}
    # The loader's fail_on must go in option_string: thumbnail's own fail_on is not passed on.
    if isinstance(source, bytes):
        return pyvips.Image.thumbnail_buffer(source, width, option_string=_LOAD_OPTIONS, **options)
    return pyvips.Image.thumbnail_source(
        _file_source(source), width, option_string=_LOAD_OPTIONS, **options
    )


def _thumbnail_box(step: Resize, width: int, height: int) -> tuple[int, dict[str, Any]]:
    """``thumbnail`` width and options that resize a ``width`` x ``height`` image per ``step``."""
    both = step.width is not None and step.height is not None
    box_width, box_height = step.width or _UNBOUNDED, step.height or _UNBOUNDED
    options: dict[str, Any] = {"size": "both" if step.enlarge else "down"}
    if both and step.fit is not Fit.INSIDE:
        if not step.enlarge:  # never larger than the source on either axis
            box_width, box_height = min(box_width, width), min(box_height, height)
        if step.fit is Fit.COVER:
            options["crop"] = "centre"
        else:
            options["size"] = "force"
    return box_width, {**options, "height": box_height}


def _apply(step: Operation, image: Any) -> Any:
    if isinstance(step, Resize):
        width, options = _thumbnail_box(step, image.width, image.height)
        return image.thumbnail_image(width, **options)
    if isinstance(step, Grayscale):
        return _grayscale(image)
    if isinstance(step, Blur):
        return image.gaussblur(step.sigma)
    raise TypeError(f"unknown step {step!r}")  # pragma: no cover - the models allow no other


def _grayscale(image: Any) -> Any:
    """Rec. 601 luma of the sRGB values, alpha kept: far cheaper than ``colourspace("b-w")``.

    Computed as the mean of the bands scaled by three times the weights (+ 0.5 to round): three
    libvips operations, cheaper per pixel than ``recomb`` and with less fixed cost.
    """
    if image.bands < 3:
        return image
    colour = image.extract_band(0, n=3) if image.bands > 3 else image
    luma = colour.linear(_REC601_LUMA_X3, [0.5, 0.5, 0.5]).bandmean().cast("uchar")
    if image.hasalpha():
        luma = luma.bandjoin(image.extract_band(3))
    return luma.copy(interpretation="b-w")


def _as_8bit(image: Any) -> Any:
    """8-bit sRGB or grey, with or without alpha (``thumbnail`` has done most of it)."""
    if image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("b-w" if image.bands < 3 else "srgb")
    if (
        image.bands > 4
    ):  # extra channels beyond alpha, e.g. TIFF ExtraSamples: no encoder takes them
        image = image[0:4]
    return image if image.format == "uchar" else image.cast("uchar")


def _check_output(image: Any, output_format: OutputFormat, limits: Limits) -> None:
    width, height = int(image.width), int(image.height)
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


def _file_source(path: Path) -> Any:
    if not path.is_file():  # the caller's problem, not the input's
        raise FileNotFoundError(path)
    return pyvips.Source.new_from_file(str(path))  # unlike new_from_file, no "[options]" in names


def _input_error(error: pyvips.Error, source: Path | bytes) -> ImagingError:
    """A short message from libvips' own words that names no file and shows no trace."""
    detail = str(error.detail or "")
    if _NOT_AN_IMAGE.search(detail):
        return UnsupportedFormat(_UNSUPPORTED)
    lines = [line.strip() for line in detail.splitlines()]
    reasons = [line for line in lines if line and not _NOISE.search(line)]
    reason = re.sub(r"^[\w.-]+: ", "", reasons[0]) if reasons else "corrupt or unreadable data"
    if isinstance(source, Path):
        reason = reason.replace(str(source), "the file")
    if len(reason) > 200:
        reason = reason[:197] + "..."
    if _MISSING_CODEC.search(reason):
        return UnsupportedFormat(f"the image uses a feature this service cannot decode: {reason}")
    return DecodeError(f"the image could not be decoded: {reason}")


def _clear_libvips_errors() -> None:
    """libvips collects warnings in one global buffer: drop earlier jobs' so messages are ours."""
    pyvips.vips_lib.vips_error_clear()
