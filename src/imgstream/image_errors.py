"""What can go wrong in rendering an image, as exception types the worker and API tell apart.

Every failure caused by the input is an ``ImagingError`` whose message is meant for a person
and whose ``code`` goes into the job's record; ``RenderTimeout`` is not the input's fault.
"""

from __future__ import annotations


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
