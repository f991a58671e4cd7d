"""Opening a source, checking it against the limits, and decoding it for the first step.

Sources are read sequentially with strict decoding (``fail_on=error``), and the limits are
checked on the header before any pixel is decoded. Decoding takes the cheapest correct road
the first steps allow: JPEG shrink-on-load for a resize, the luma plane alone for a
grayscale (``luma``), the header already open for an image that needs no conversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

from imgstream import luma
from imgstream.image_errors import DecodeError, ImagingError, LimitExceeded, UnsupportedFormat
from imgstream.operations import Limits
from imgstream.steps import Operation, Resize
from imgstream.transforms import UNBOUNDED, pad, thumbnail_box

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
"""Loaders this process accepts; ``accept_untrusted`` adds the untrusted ones when told to."""
_LOAD_OPTIONS = "fail_on=error"  # refuse truncated or corrupt data rather than invent pixels

_UNSUPPORTED = (
    "the file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF)"
)
_NOT_AN_IMAGE = re.compile(r"not in a known format|is not a known")
_MISSING_CODEC = re.compile(
    r"not been built in|support is not configured|data precision|not supported"
)
_NOISE = re.compile(r"^source: bad seek|^unable to (call|load|write)|: unable to write to")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the header says; width and height are as displayed, after EXIF orientation."""

    format: str
    width: int
    height: int
    pages: int
    has_alpha: bool


def accept_untrusted(allow: bool) -> None:
    """Accept SVG and PDF sources in this process, or (the default) refuse them."""
    _accepted_loaders.clear()
    _accepted_loaders.update(_LOADER_FORMATS)
    if allow:
        _accepted_loaders.update(_UNTRUSTED_LOADER_FORMATS)


def open_header(source: Path | bytes) -> Any:
    """Open lazily: libvips reads the header now and decodes pixels only when they are asked for."""
    clear_libvips_errors()
    try:
        if isinstance(source, bytes):
            return pyvips.Image.new_from_buffer(source, _LOAD_OPTIONS, access="sequential")
        return pyvips.Image.new_from_source(
            _file_source(source), _LOAD_OPTIONS, access="sequential"
        )
    except pyvips.Error as error:
        raise input_error(error, source) from None


def check_source(header: Any, limits: Limits) -> SourceInfo:
    """What the header says, once it is known to be an accepted format within the limits."""
    loader = _loader(header)
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
    if _orientation(header) in (5, 6, 7, 8):  # turned by 90 degrees when displayed
        width, height = height, width
    return SourceInfo(
        format=_accepted_loaders[loader],
        width=width,
        height=height,
        pages=pages,
        has_alpha=bool(header.hasalpha()),
    )


def decode(
    source: Path | bytes,
    header: Any,
    info: SourceInfo,
    steps: list[Operation],
    limits: Limits,
    *,
    luma_allowed: bool = True,
) -> tuple[Any, list[Operation]]:
    """The source decoded as 8-bit sRGB or grey for ``steps``, and the steps left to apply.

    A first resize is done while decoding (shrink-on-load, then ``thumbnail``); nothing of
    the pipeline is skipped otherwise. Pixels are computed only when the result is asked for.
    Without ``luma_allowed`` (metadata to keep, which only libvips' decoders carry) a
    grayscale never takes the luma path.
    """
    grey_first = luma_allowed and luma.wanted(steps)
    first = steps[0] if steps else None
    if isinstance(first, Resize):  # decode straight to the smaller size
        width, options = thumbnail_box(first, info.width, info.height)
        shrink = _jpeg_shrink(header, info, width, options)
        grey = _luma(source, header, info, shrink, limits) if grey_first else None
        if grey is not None:
            image = grey.thumbnail_image(width, **options)
        elif shrink > 1:
            image = _load_shrunk(source, shrink).thumbnail_image(width, **options)
        else:
            image = _as_8bit(_load(source, header, width, options))
        return pad(first, image), steps[1:]
    grey = _luma(source, header, info, 1, limits) if grey_first else None
    if grey is not None:
        return grey, steps
    if _needs_conversion(header):
        options = {"height": UNBOUNDED, "size": "down"}
        return _as_8bit(_load(source, header, UNBOUNDED, options)), steps
    return header, steps  # already upright 8-bit sRGB or grey: decode through the open header


def _luma(
    source: Path | bytes, header: Any, info: SourceInfo, shrink: int, limits: Limits
) -> Any | None:
    """The luma plane alone, for steps that start with a grayscale (``luma.wanted``), when the
    source is a plain JPEG whose plane at 1/``shrink`` scale stays within
    ``limits.max_luma_pixels``; otherwise ``None``. Progressive JPEGs, whose decoder holds
    every coefficient of the image at once, and JPEGs that must be turned or colour-managed
    take libvips' path.
    """
    if _loader(header) != "jpegload":  # not uhdrload: a gain map needs its own decoder
        return None
    if _needs_conversion(header) or header.get("jpeg-multiscan"):
        return None
    pixels = -(-info.width // shrink) * -(-info.height // shrink)
    if pixels > limits.max_luma_pixels:
        return None
    data = source if isinstance(source, bytes) else source.read_bytes()
    return luma.decode(data, info.width, info.height, shrink)


def _loader(header: Any) -> str:
    return re.sub(r"_(source|buffer|file)$", "", str(header.get("vips-loader")))


def _orientation(header: Any) -> int:
    return int(header.get("orientation")) if header.get_typeof("orientation") else 1


def _needs_conversion(header: Any) -> bool:
    """Whether decoding must go through ``thumbnail`` even without a resize.

    It must when the image is to be turned (EXIF orientation), carries an ICC profile, or is
    anything but 8-bit sRGB or grey: rotating a sequentially read image afterwards
    (``autorot``) fails with "out of order read". Other images are read through the header
    already open, which saves a second open and, for small images, most of the cost.
    """
    return (
        _orientation(header) != 1
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
    if (
        not _loader(header).startswith("jpegload")
        or options["size"] == "both"
        or _needs_conversion(header)
    ):
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


def _file_source(path: Path) -> Any:
    if not path.is_file():  # the caller's problem, not the input's
        raise FileNotFoundError(path)
    return pyvips.Source.new_from_file(str(path))  # unlike new_from_file, no "[options]" in names


def input_error(error: pyvips.Error, source: Path | bytes) -> ImagingError:
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


def clear_libvips_errors() -> None:
    """libvips collects warnings in one global buffer: drop earlier jobs' so messages are ours."""
    pyvips.vips_lib.vips_error_clear()
