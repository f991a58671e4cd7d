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

from imgstream import placeholder
from imgstream.operations import JobSpec, Limits, OutputFormat, Resize
from imgstream.transforms import UNBOUNDED, GeometryError, apply, pad, thumbnail_box

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
SMALL_COPY_PIXELS = 4_000_000
"""The largest result held in memory for its small copy (16 MB of RGBA); a larger one is
encoded as it streams and decoded again for its placeholder."""
_QUALITY_STEPS = 7
"""Encodes tried after the first to meet ``max_bytes``: a bisection of 1-100."""
_LOAD_OPTIONS = "fail_on=error"  # refuse truncated or corrupt data rather than invent pixels

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


class OutsideImage(ImagingError):
    """A step does not fit the image as it is at that step (a crop box outside it)."""

    code = "outside_image"


class TooManyBytes(ImagingError):
    """The result cannot be made to fit ``max_bytes``."""

    code = "max_bytes_unreachable"


class RenderTimeout(Exception):
    """Rendering was stopped at its deadline. Not an input error: another attempt may finish."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the header says; width and height are as displayed, after EXIF orientation."""

    format: str
    width: int
    height: int
    pages: int
    has_alpha: bool


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
    (for placeholders, without decoding the result again).
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

    header = _open_header(source)
    info = _check_source(header, limits)
    output_format = spec.format or default_output_format(info.format)
    steps = list(spec.operations)
    try:
        first = steps[0]
        if isinstance(first, Resize):  # decode straight to the smaller size
            width, options = thumbnail_box(first, info.width, info.height)
            shrink = _jpeg_shrink(header, info, width, options)
            if shrink > 1:
                image = _load_shrunk(source, shrink).thumbnail_image(width, **options)
            else:
                image = _as_8bit(_load(source, header, width, options))
            image = pad(first, image)
            steps = steps[1:]
        elif _needs_conversion(header):
            options = {"height": UNBOUNDED, "size": "down"}
            image = _as_8bit(_load(source, header, UNBOUNDED, options))
        else:  # already upright 8-bit sRGB or grey: decode through the open header
            image = header
        for step in steps:
            image = apply(step, image, materialise)
        if output_format is OutputFormat.JPEG and image.hasalpha():
            image = image.flatten(background=[255])
        _check_output(image, output_format, limits)
        if not spec.strip:
            image = image.copy()
            image.set_type(pyvips.GValue.gint_type, "orientation", 1)
        small = None
        held = small_copy and image.width * image.height <= SMALL_COPY_PIXELS
        if spec.max_bytes is not None or held:
            image = materialise(image)  # encoded more than once, or copied small too
        if held:
            small = placeholder.rgba_copy(image)
        data = _encode(stoppable(image), output_format, spec)
    except GeometryError as error:
        raise OutsideImage(str(error)) from None
    except pyvips.Error as error:
        if deadline is not None and time.monotonic() > deadline:
            raise RenderTimeout(f"rendering took longer than {timeout:g} s") from None
        raise _input_error(error, source) from None
    return Rendered(
        data=data,
        width=int(image.width),
        height=int(image.height),
        format=output_format,
        small=small,
    )


def _encode(image: Any, output_format: OutputFormat, spec: JobSpec) -> bytes:
    """The encoded image; with ``max_bytes``, at the highest quality that fits (bisection)."""
    suffix, options = f".{output_format.extension}", _SAVE_OPTIONS[output_format]
    metadata = _NO_METADATA if spec.strip else _ALL_METADATA
    default = output_format.default_quality
    quality = None if default is None else spec.quality or default  # lossless: no quality

    def encode(q: int | None) -> bytes:
        extra = {} if q is None else {"Q": q}
        data: bytes = image.write_to_buffer(suffix, **options, **extra, **metadata)
        return data

    data = encode(quality)
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
        attempt = encode(middle)
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
    return SourceInfo(
        format=_accepted_loaders[loader],
        width=width,
        height=height,
        pages=pages,
        has_alpha=bool(header.hasalpha()),
    )


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
