"""A job's output options: the format (its media type, file extension, default quality and
the aliases a client may use), the quality, the size budget and metadata stripping.

This is the one place that names the output options and the formats' aliases and extensions;
``operations.JobSpec`` holds the options, validated as declared here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    GIF = "gif"
    TIFF = "tiff"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self, self.value)

    @property
    def default_quality(self) -> int | None:
        """The quality used when a job names none; ``None`` for lossless formats."""
        return _DEFAULT_QUALITY.get(self)

    @classmethod
    def parse(cls, value: Any) -> Any:
        """The format a client named, by its name or a common alias (``jpg``, ``tif``), in any
        case; anything else is returned as it came, for validation to refuse."""
        if isinstance(value, str):
            name = value.strip().lower()
            return FORMAT_ALIASES.get(name, name)
        return value


_EXTENSIONS = {OutputFormat.JPEG: "jpg", OutputFormat.TIFF: "tif"}
"""The file extensions that are not the format's name."""
_DEFAULT_QUALITY = {OutputFormat.JPEG: 85, OutputFormat.WEBP: 80, OutputFormat.AVIF: 60}
FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}
"""The other names a client may give a format by."""
LOSSY_FORMATS = tuple(_DEFAULT_QUALITY)
OUTPUT_FIELDS = ("format", "quality", "max_bytes", "strip")
"""The output options: form fields, stream entry fields and job hash fields alike."""

RESULT_EXTENSIONS = frozenset(output.extension for output in OutputFormat)
"""Every extension a stored result may have."""

Format = Annotated[OutputFormat | None, BeforeValidator(OutputFormat.parse)]
"""``None`` follows the input's format."""
Quality = Annotated[int | None, Field(ge=1, le=100)]
"""``None`` is the format's default (``OutputFormat.default_quality``)."""
MaxBytes = Annotated[int | None, Field(ge=1, le=2**40)]
"""Lowers the quality of a lossy format until the result fits."""


def lossless_problem(
    output_format: OutputFormat | None, quality: int | None, max_bytes: int | None
) -> str:
    """What is wrong with asking a lossless format for a quality or a size budget, or ``""``."""
    for name, value in (("quality", quality), ("max_bytes", max_bytes)):
        if value is not None and output_format not in (None, *LOSSY_FORMATS):
            return (
                f"{name}: {output_format} is lossless; {name} applies to {', '.join(LOSSY_FORMATS)}"
            )
    return ""


def output_fields(
    output_format: OutputFormat | None, quality: int | None, max_bytes: int | None, strip: bool
) -> dict[str, str]:
    """The output options as wire fields (``OUTPUT_FIELDS``); those at their default are left
    out."""
    fields = {
        "format": output_format.value if output_format else "",
        "quality": "" if quality is None else str(quality),
        "max_bytes": "" if max_bytes is None else str(max_bytes),
        "strip": "" if strip else "false",
    }
    return {name: value for name, value in fields.items() if value}
