"""Each pipeline step as a libvips transform of a decoded 8-bit sRGB or grey image.

Pure functions of an image (and the step); ``imaging`` decodes, runs them in order and
encodes. Steps that must read their input more than once or out of order (turns, vertical
flips, trim) first ask for it in memory through ``materialise``, since sources are read
sequentially.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from imgstream.steps import (
    Adjust,
    Blur,
    Crop,
    Direction,
    Fit,
    Flip,
    Gravity,
    Grayscale,
    Operation,
    Pixelate,
    Resize,
    Rotate,
    Sharpen,
    Trim,
    colour_values,
)

UNBOUNDED = 10_000_000
"""libvips' largest coordinate: no constraint on that side."""
REC601_LUMA = (0.299, 0.587, 0.114)
_QUARTERS = ("d0", "d90", "d180", "d270")

Materialise = Callable[[Any], Any]
"""Returns the image computed into memory, readable any number of times in any order."""


class GeometryError(Exception):
    """A step that cannot apply to the image as it is at that step (a crop outside it)."""


def thumbnail_box(step: Resize, width: int, height: int) -> tuple[int, dict[str, Any]]:
    """``thumbnail`` width and options that resize a ``width`` x ``height`` image per ``step``.

    For ``contain`` this is the ``inside`` part; ``pad`` then extends it to the box.
    """
    both = step.width is not None and step.height is not None
    box_width, box_height = step.width or UNBOUNDED, step.height or UNBOUNDED
    options: dict[str, Any] = {"size": "both" if step.enlarge else "down"}
    if both and step.fit in (Fit.COVER, Fit.FILL):
        if not step.enlarge:  # never larger than the source on either axis
            box_width, box_height = min(box_width, width), min(box_height, height)
        if step.fit is Fit.COVER:
            options["crop"] = _interesting(step.gravity, width, height, box_width, box_height)
        else:
            options["size"] = "force"
    return box_width, {**options, "height": box_height}


def _interesting(gravity: Gravity, width: int, height: int, box_w: int, box_h: int) -> str:
    """libvips' crop rule for ``gravity``: ``low`` keeps the top or left, ``high`` the bottom
    or right, on whichever axis ``cover`` crops (the other fits the box exactly)."""
    if gravity is Gravity.SMART:
        return "attention"
    crops_height = box_w / width >= box_h / height
    if crops_height and gravity in (Gravity.NORTH, Gravity.SOUTH):
        return "low" if gravity is Gravity.NORTH else "high"
    if not crops_height and gravity in (Gravity.WEST, Gravity.EAST):
        return "low" if gravity is Gravity.WEST else "high"
    return "centre"


def pad(step: Resize, image: Any) -> Any:
    """The rest of a resize once the image is scaled: ``contain`` pads it to the box."""
    if step.fit is not Fit.CONTAIN or step.width is None or step.height is None:
        return image
    if (image.width, image.height) == (step.width, step.height):
        return image
    image = _colour(image)
    background = colour_values(step.background) + ([255] if image.hasalpha() else [])
    return image.gravity(
        "centre", step.width, step.height, extend="background", background=background
    )


def apply(step: Operation, image: Any, materialise: Materialise) -> Any:
    """``step`` applied to ``image``."""
    match step:
        case Resize():
            width, options = thumbnail_box(step, image.width, image.height)
            return pad(step, image.thumbnail_image(width, **options))
        case Grayscale():
            return grayscale(image)
        case Blur():
            return image.gaussblur(step.sigma)
        case Crop():
            return crop(step, image)
        case Rotate():
            return rotate(step, materialise(image))
        case Flip(direction=Direction.HORIZONTAL):
            return image.fliphor()
        case Flip():
            return materialise(image).flipver()
        case Sharpen():
            return sharpen(step, image)
        case Pixelate():
            return pixelate(step, image)
        case Adjust():
            return adjust(step, image)
        case Trim():
            return trim(step, materialise(image))
    raise TypeError(f"unknown step {step!r}")  # pragma: no cover - the models allow no other


def grayscale(image: Any) -> Any:
    """Rec. 601 luma of the sRGB values, alpha kept: far cheaper than ``colourspace("b-w")``.

    Computed as the mean of the bands scaled by three times the weights (+ 0.5 to round): three
    libvips operations, cheaper per pixel than ``recomb`` and with less fixed cost.
    """
    if image.bands < 3:
        return image
    luma = _luma(image).cast("uchar")
    if image.hasalpha():
        luma = luma.bandjoin(image.extract_band(3))
    return luma.copy(interpretation="b-w")


def _luma(image: Any) -> Any:
    """Rec. 601 luma of an sRGB image's colour bands, as float, + 0.5 so a cast rounds."""
    colour = image.extract_band(0, n=3) if image.bands > 3 else image
    weights = [3 * weight for weight in REC601_LUMA]
    return colour.linear(weights, [0.5, 0.5, 0.5]).bandmean()


def crop(step: Crop, image: Any) -> Any:
    check_crop(step, image.width, image.height)
    return image.crop(step.left, step.top, step.width, step.height)


def check_crop(step: Crop, width: int, height: int) -> None:
    """Raise ``GeometryError`` if the crop box reaches outside a ``width`` x ``height`` image."""
    if step.left + step.width > width or step.top + step.height > height:
        raise GeometryError(
            f"the crop box {step.width}x{step.height} at ({step.left}, {step.top}) reaches "
            f"outside the {width}x{height} image it was given"
        )


def rotate(step: Rotate, image: Any) -> Any:
    """Quarter turns move pixels losslessly; other angles interpolate and fill the corners."""
    turns = step.quarter_turns
    if turns is not None:
        return image if turns == 0 else image.rot(_QUARTERS[turns])
    if step.background is None and image.hasalpha():
        background: list[float] = [0.0] * image.bands
    else:
        image = _colour(image)
        background = colour_values(step.background or "#ffffff") + (
            [255] if image.hasalpha() else []
        )
    return image.rotate(step.angle, background=background)


def sharpen(step: Sharpen, image: Any) -> Any:
    """Unsharp mask: each colour band plus its difference from its Gaussian blur (amount 1,
    the blur in floating point so that it is exact), rounded and clipped to 0-255; alpha
    kept. As Pillow's and OpenCV's, and several times cheaper than libvips ``sharpen``,
    which works on lightness in LabS.
    """
    colour, alpha = _split_alpha(image)
    blurred = colour.gaussblur(step.sigma, precision="float")
    sharpened = (colour * 2 - blurred + 0.5).cast("uchar")  # rounded
    return _join_alpha(sharpened.copy(interpretation=colour.interpretation), alpha)


def pixelate(step: Pixelate, image: Any) -> Any:
    """Blocks of ``size`` px from the top-left corner, each the mean of its pixels.

    Partial blocks at the right and bottom average what they cover (the padding repeats
    the edge). A block larger than the image is the whole image on that axis.
    """
    width, height = image.width, image.height
    across, down = min(step.size, width), min(step.size, height)
    if across == down == 1:
        return image
    padded = image.embed(
        0, 0, math.ceil(width / across) * across, math.ceil(height / down) * down, extend="copy"
    )
    return padded.shrink(across, down).zoom(across, down).crop(0, 0, width, height)


def adjust(step: Adjust, image: Any) -> Any:
    """Saturation (towards Rec. 601 grey), then brightness (a multiplier), then contrast
    (around mid-grey, 128), each ``1`` unchanged; values are rounded and clipped to 0-255.

    All three are linear, so they are one matrix and one offset (``recomb``), not three passes.
    """
    colour, alpha = _split_alpha(image)
    scale = step.brightness * step.contrast
    offset = 128 * (1 - step.contrast) + 0.5  # + 0.5: the cast below rounds down
    if colour.bands >= 3:
        keep, grey = step.saturation, 1 - step.saturation
        matrix = [
            [scale * ((keep if row == column else 0) + grey * REC601_LUMA[column])
             for column in range(3)]
            for row in range(3)
        ]  # fmt: skip
        value = colour.recomb(matrix) + offset
    else:
        value = colour.linear(scale, offset)
    adjusted = value.cast("uchar").copy(interpretation=colour.interpretation)
    return _join_alpha(adjusted, alpha)


def trim(step: Trim, image: Any) -> Any:
    """Crops away the borders whose every band is within ``threshold`` of the top-left pixel;
    an image that is all border is left as it is.

    Two passes over the pixels (the mask's column and row sums), without libvips
    ``find_trim``'s median filter, which costs eight times as much on a photo.
    """
    marked = (image - image.getpoint(0, 0)).abs() > step.threshold
    if marked.bands > 1:
        marked = marked.bandor()
    columns, rows = marked.project()
    across, down = _span(columns.tolist()[0]), _span([row[0] for row in rows.tolist()])
    if across is None or down is None:
        return image
    return image.crop(across[0], down[0], across[1] - across[0] + 1, down[1] - down[0] + 1)


def _span(sums: list[float]) -> tuple[int, int] | None:
    """The first and last index with a non-zero sum, or ``None`` if there is none."""
    marked = [index for index, total in enumerate(sums) if total]
    return (marked[0], marked[-1]) if marked else None


def _colour(image: Any) -> Any:
    """The image as sRGB (alpha kept), so that a colour can be painted on it."""
    return image if image.bands >= 3 else image.colourspace("srgb")


def _split_alpha(image: Any) -> tuple[Any, Any | None]:
    if not image.hasalpha():
        return image, None
    return image.extract_band(0, n=image.bands - 1), image.extract_band(image.bands - 1)


def _join_alpha(image: Any, alpha: Any | None) -> Any:
    return image if alpha is None else image.bandjoin(alpha)
