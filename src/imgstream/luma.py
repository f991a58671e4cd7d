"""A JPEG decoded straight to its luma plane by libjpeg-turbo (through ``simplejpeg``).

libvips' JPEG loader always converts YCbCr to RGB, upsampling the chroma, before a grayscale
step throws the colour away again: two to three times the decoding work that Pillow and OpenCV
do for the same result. A JFIF JPEG's Y plane is Rec. 601 luma (``transforms.grayscale``'s
weights), so decoding only that plane gives the same picture, within rounding, for a fraction
of the CPU. libjpeg-turbo also scales in the DCT domain while decoding, as libvips'
shrink-on-load does. The whole plane is held in memory, so the caller bounds its pixels.
"""

from __future__ import annotations

import math
from typing import Any

import pyvips

from imgstream.steps import Grayscale, Operation, Resize

_LUMA_COLOURSPACES = ("YCbCr", "Gray")
"""Encodings whose first component is the luma (Adobe RGB or CMYK JPEGs have none)."""


def wanted(steps: list[Operation]) -> bool:
    """Whether ``steps`` throw colour away before anything else could use it."""
    head = steps[1:2] if steps[:1] and isinstance(steps[0], Resize) else steps[:1]
    return bool(head) and isinstance(head[0], Grayscale)


def decode(data: bytes, width: int, height: int, shrink: int) -> Any | None:
    """The luma of the ``width`` x ``height`` JPEG ``data``, decoded at 1/``shrink`` scale, as a
    one-band 8-bit libvips image; ``None`` when this JPEG is not for this path.

    Not for it: another colour encoding, or anything libjpeg warns about (truncated or corrupt
    data, a header that lies): libvips' own path then decodes it or reports the problem in
    the words the rest of the service uses.
    """
    import simplejpeg  # here: numpy with it, which a process that never decodes need not load

    smallest = {"min_width": math.ceil(width / shrink), "min_height": math.ceil(height / shrink)}
    try:
        _, _, colourspace, _ = simplejpeg.decode_jpeg_header(data, **smallest)
        if colourspace not in _LUMA_COLOURSPACES:
            return None
        plane = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **smallest)
    except ValueError:
        return None
    rows, columns = plane.shape[:2]
    image = pyvips.Image.new_from_memory(plane.data, columns, rows, 1, "uchar")
    return image.copy(interpretation="b-w")
