"""The upload form of ``POST /api/jobs``: read from the request, and described for OpenAPI.

The form is read by hand rather than through FastAPI's ``Form()`` parameters, so that a
field the form does not have is refused by name (``operations.spec_from_form``) instead of
being dropped, and so that its OpenAPI description has real types, enums and one coherent
example: Swagger UI's *Try it out* sends what it pre-fills, so every optional field either
belongs to the example (resize to 800 px wide) or is pre-filled with nothing (its only
example is the empty string, which Swagger UI does not send).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, BinaryIO

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from imgstream.operations import (
    ABSOLUTE_MAX_SIDE,
    FORM_FIELDS,
    OPERATION_NAMES,
    Direction,
    Fit,
    Gravity,
    Limits,
)
from imgstream.output import LOSSY_FORMATS, OutputFormat

MAX_FIELD_BYTES = 64 * 1024
"""The largest text field (a long ``operations`` list is a few KiB)."""
MAX_PARTS = 2 * len(FORM_FIELDS)
"""Room for every field once, and for repeats to be refused by name rather than counted."""
MAX_HELD_BYTES = 256 * 1024
"""An upload up to this size is also held in memory as it arrives, and probed from there."""


class FormError(Exception):
    """The request is not a readable upload form; the message is meant for a person."""


class TooManyFiles(FormError):
    """The form holds more files than the route takes."""


class HashedUpload(UploadFile):
    """A file part that knows its SHA-256, computed while it streamed in (no second read),
    and holds its bytes while they are few (``held``), for a header probe without a read.

    A part written into a storage's draft is written as it arrives, in the event loop (a
    page-cache write; ``fsync`` comes with the commit): no spool, no thread per chunk. A
    draft the disk refuses (full) is still read to the end and hashed; ``failure`` says why.
    """

    def __init__(self, plain: UploadFile, draft: BinaryIO | None = None) -> None:
        file = plain.file if draft is None else draft
        super().__init__(file, size=0, filename=plain.filename, headers=plain.headers)
        self._digest = hashlib.sha256()
        self._held: list[bytes] | None = []
        self.drafted = draft is not None
        self.failure: OSError | None = None

    @property
    def _in_memory(self) -> bool:  # Starlette's word for "write, seek and close in the loop"
        return self.drafted or super()._in_memory

    async def write(self, data: bytes) -> None:
        self._digest.update(data)
        if self._held is not None:
            self._held.append(data)
            if (self.size or 0) + len(data) > MAX_HELD_BYTES:
                self._held = None
        if self.failure is not None:
            self.size = (self.size or 0) + len(data)
            return
        try:
            await super().write(data)
        except OSError as exc:
            if not self.drafted:
                raise
            self.failure = exc

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def held(self) -> bytes | None:
        """The whole upload, when it is at most ``MAX_HELD_BYTES``; None otherwise."""
        return None if self._held is None else b"".join(self._held)


class _HashingParser(MultiPartParser):
    """Starlette's multipart parser, with every file part a ``HashedUpload``, the first
    ``image`` part written into a draft when ``drafts`` makes them."""

    def __init__(self, *args: Any, drafts: Callable[[], BinaryIO] | None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._drafts = drafts
        self.drafted: list[HashedUpload] = []

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part
        if part.file is None:
            return
        draft = None
        if self._drafts is not None and part.field_name == "image" and not self.drafted:
            try:
                draft = self._drafts()
            except OSError:  # no room for one more file: spooled, and refused as it was
                draft = None
        spool = part.file.file
        part.file = HashedUpload(part.file, draft)
        if draft is not None:
            spool.close()  # Starlette's, left empty
            self.drafted.append(part.file)


@dataclass(frozen=True, slots=True)
class Upload:
    image: HashedUpload
    fields: dict[str, str]
    """Every text field, by name, as sent (unknown names included, for the spec to refuse)."""


def read_upload(form: FormData) -> Upload:
    """The image and the text fields of an upload, each field given at most once."""
    images, fields = split_form(form)
    if len(images) > 1:
        raise FormError("image: given more than once; give each field once")
    return Upload(image=images[0], fields=fields)


def split_form(form: FormData) -> tuple[list[HashedUpload], dict[str, str]]:
    """The ``image`` files (at least one) and every text field, each given at most once."""
    images: list[HashedUpload] = []
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name in fields:
            raise FormError(f"{name}: given more than once; give each field once")
        if name == "image" and isinstance(value, HashedUpload):
            images.append(value)
        elif isinstance(value, UploadFile):
            raise FormError(f"{name}: a file was sent; only image is a file")
        elif name == "image":
            raise FormError("image: must be the image file, not text")
        else:
            fields[name] = value
    if not images:
        raise FormError("image: required (the image file to process)")
    return images, fields


async def parse(
    request: Request, max_files: int = 2, drafts: Callable[[], BinaryIO] | None = None
) -> FormData:
    """The form, with the spooled files (each a ``HashedUpload``); the caller closes it.

    ``max_files`` caps the file parts spooled before the form is refused (``TooManyFiles``).
    With ``drafts``, the first ``image`` part is written into a draft instead of a spool;
    it is dropped if the form cannot be read.
    """
    limits: dict[str, Any] = {
        "max_files": max_files,
        "max_fields": MAX_PARTS,
        "max_part_size": MAX_FIELD_BYTES,
    }
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:  # a urlencoded form has no file: read_upload says the image is missing
            return await request.form(**limits)
        except HTTPException as exc:  # Starlette's word for a malformed or oversized form
            raise FormError(f"the form could not be read: {exc.detail}") from None
    parser: _HashingParser | None = None
    try:
        async with aclosing(request.stream()) as stream:
            parser = _HashingParser(request.headers, stream, drafts=drafts, **limits)
            return await parser.parse()
    except BaseException as exc:
        for upload in parser.drafted if parser is not None else ():
            await upload.close()
        if not isinstance(exc, MultiPartException):
            raise
        # Starlette names no exception type for this one refusal, only its message.
        if exc.message.startswith("Too many files"):
            raise TooManyFiles(f"image: {exc.message}") from None
        raise FormError(f"the form could not be read: {exc.message}") from None


def form_schema(limits: Limits) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /api/jobs`` for the OpenAPI schema."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": _properties(limits),
                    "additionalProperties": False,
                },
                "encoding": {"image": {"contentType": "image/*"}},
            }
        },
    }


def batch_form_schema(limits: Limits, max_files: int) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /api/batches``: the job form, ``image`` given 1 to
    ``max_files`` times."""
    schema = form_schema(limits)
    body = schema["content"]["multipart/form-data"]["schema"]
    image = body["properties"]["image"]
    body["properties"]["image"] = {
        "type": "array",
        "items": image,
        "minItems": 1,
        "maxItems": max_files,
        "description": "The images, one part each, in the order their jobs are listed.",
    }
    return schema


def _step(operation: str, text: str) -> str:
    return f"`{operation}`: {text}"


def _properties(limits: Limits) -> dict[str, Any]:
    none: dict[str, Any] = {"examples": [""]}  # pre-filled with nothing, so not sent
    side = {
        "type": "integer",
        "minimum": 1,
        "maximum": min(limits.max_dimension, ABSOLUTE_MAX_SIDE),
    }
    offset = {"type": "integer", "minimum": 0, "maximum": ABSOLUTE_MAX_SIDE}
    properties: dict[str, Any] = {
        "image": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": "The image: JPEG, PNG, WebP, GIF, TIFF or HEIF/AVIF, judged by "
            "its bytes.",
        },
        "operation": {
            "type": "string",
            "enum": list(OPERATION_NAMES),
            "examples": ["resize"],
            "description": "One operation, with its parameters below; or give `operations`.",
        },
        "operations": {
            "type": "string",
            **none,
            "description": "Instead of `operation`: a JSON list of steps applied in order, "
            'e.g. `[{"op":"resize","width":800},{"op":"grayscale"}]` or '
            '`[{"op":"crop","left":10,"top":10,"width":600,"height":400},'
            '{"op":"rotate","angle":90},{"op":"adjust","saturation":1.3}]`; step parameters '
            "go inside each step.",
        },
        "width": {
            **side,
            "examples": [800],
            "description": _step("resize", "width in px") + "; " + _step("crop", "box width"),
        },
        "height": {
            **side,
            **none,
            "description": _step("resize", "height in px; give width, height or both")
            + "; "
            + _step("crop", "box height"),
        },
        "fit": {
            "type": "string",
            "enum": [fit.value for fit in Fit],
            "default": Fit.INSIDE.value,
            "description": _step(
                "resize",
                "`inside` keeps the aspect ratio within the box, `cover` fills it and crops "
                "(see `gravity`), `fill` stretches, `contain` fits inside and pads to the box "
                "with `background`",
            ),
        },
        "enlarge": {
            "type": "boolean",
            "default": False,
            "description": _step("resize", "allow upscaling"),
        },
        "gravity": {
            "type": "string",
            "enum": [gravity.value for gravity in Gravity],
            "default": Gravity.CENTRE.value,
            "description": _step(
                "resize", "with `fit=cover`, the part kept; `smart` finds the most interesting"
            ),
        },
        "background": {
            "type": "string",
            "pattern": "^#[0-9a-fA-F]{6}$",
            **none,
            "description": _step("resize", "`fit=contain`'s padding, `#ffffff` when not given")
            + "; "
            + _step("rotate", "the corners' colour (transparent or white when not given)"),
        },
        "sigma": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": limits.max_sigma,
            **none,
            "description": _step("blur", "Gaussian sigma; 2.0 when not given")
            + "; "
            + _step("sharpen", "unsharp mask sigma; 1.0 when not given"),
        },
        "left": {**offset, **none, "description": _step("crop", "box left edge in px; 0")},
        "top": {**offset, **none, "description": _step("crop", "box top edge in px; 0")},
        "angle": {
            "type": "number",
            "minimum": -360,
            "maximum": 360,
            **none,
            "description": _step(
                "rotate", "degrees clockwise; multiples of 90 are lossless, others fill corners"
            ),
        },
        "direction": {
            "type": "string",
            "enum": [direction.value for direction in Direction],
            **none,
            "description": _step("flip", "`horizontal` mirrors left-right, `vertical` top-bottom"),
        },
        "size": {
            **side,
            **none,
            "description": _step("pixelate", "block side in px; 10 when not given"),
        },
        **{
            name: {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                **none,
                "description": _step("adjust", f"{name} multiplier; 1 leaves it unchanged{also}"),
            }
            for name, also in (
                ("brightness", ""),
                ("contrast", ""),
                ("saturation", ", 0 is grey"),
            )
        },
        "threshold": {
            "type": "number",
            "minimum": 0,
            "maximum": 255,
            **none,
            "description": _step(
                "trim", "how far from the top-left pixel's colour a border may be; 10"
            ),
        },
        "format": {
            "type": "string",
            "enum": [output.value for output in OutputFormat],
            **none,
            "description": "Output format (`jpg` and `tif` are accepted too); not given: the "
            "input's when it is JPEG, PNG or WebP, else PNG.",
        },
        "quality": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            **none,
            "description": "JPEG, WebP and AVIF quality; not given: "
            + ", ".join(f"{f.value} {f.default_quality}" for f in LOSSY_FORMATS)
            + ". Lossless formats take none.",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            **none,
            "description": "Largest result in bytes: a lossy format's quality is lowered until "
            "it fits; the job fails (`max_bytes_unreachable`) if it cannot.",
        },
        "strip": {
            "type": "boolean",
            "default": True,
            "description": "Remove EXIF (GPS, camera), XMP, IPTC and comments; `false` keeps "
            "them. Orientation is always applied and colours are always sRGB.",
        },
        "callback_url": {
            "type": "string",
            **none,
            "description": "A public http(s) URL the job's final status is POSTed to when it "
            "ends (a signed webhook, `Imgstream-Signature`).",
        },
    }
    return properties
