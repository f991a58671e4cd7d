"""What a job asks for: the operation specs, validated, with no HTTP or Redis in sight.

A job is a pipeline of steps applied in order (``resize``, ``grayscale``, ``blur``) and an
optional output format. The same models validate the web form, the JSON ``operations``
list and the stream entries written by producers in other languages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

ABSOLUTE_MAX_SIDE = 100_000
"""Hard ceiling on any requested side, whatever the settings say (libvips allows 10M)."""


class SpecError(ValueError):
    """A job spec a client sent is invalid; the message is meant for a person."""


class Fit(StrEnum):
    INSIDE = "inside"
    COVER = "cover"
    FILL = "fill"


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.JPEG else self.value


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resize(_Step):
    op: Literal["resize"] = "resize"
    width: int | None = Field(default=None, ge=1, le=ABSOLUTE_MAX_SIDE)
    height: int | None = Field(default=None, ge=1, le=ABSOLUTE_MAX_SIDE)
    fit: Fit = Fit.INSIDE
    enlarge: bool = False

    @model_validator(mode="after")
    def _needs_a_side(self) -> Resize:
        if self.width is None and self.height is None:
            raise ValueError("resize needs width, height or both")
        return self


class Grayscale(_Step):
    op: Literal["grayscale"] = "grayscale"


class Blur(_Step):
    op: Literal["blur"] = "blur"
    sigma: float = Field(default=2.0, gt=0, le=1000, allow_inf_nan=False)


Operation = Annotated[Resize | Grayscale | Blur, Field(discriminator="op")]
OPERATION_NAMES = ("resize", "grayscale", "blur")


class JobSpec(BaseModel):
    """The whole request: steps in order and the output format (``None``: follow the input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations: tuple[Operation, ...] = Field(min_length=1)
    format: OutputFormat | None = None

    def operations_json(self) -> str:
        return json.dumps([step.model_dump(mode="json") for step in self.operations])


@dataclass(frozen=True, slots=True)
class Limits:
    """Operator-set bounds on what a job may ask for and what a source image may be."""

    max_steps: int = 10
    max_sigma: float = 100.0
    max_dimension: int = 20_000
    max_pixels: int = 50_000_000
    max_frames: int = 100


_OPERATIONS_ADAPTER: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])


def describe_validation_error(error: ValidationError, root: str = "") -> str:
    """One readable line per problem, e.g. ``operations[0].width: must be >= 1``."""
    parts = []
    for item in error.errors():
        location = root
        for piece in item["loc"]:
            if isinstance(piece, int):
                location += f"[{piece}]"
            elif piece not in OPERATION_NAMES:  # skip the discriminator tag pydantic adds
                location += f".{piece}" if location else str(piece)
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def check_limits(spec: JobSpec, limits: Limits) -> None:
    """Refuse specs beyond the operator's limits, naming the limit that was hit."""
    if len(spec.operations) > limits.max_steps:
        raise SpecError(
            f"the pipeline has {len(spec.operations)} steps; "
            f"the limit is {limits.max_steps} (IMGSTREAM_MAX_STEPS)"
        )
    for index, step in enumerate(spec.operations):
        where = f"operations[{index}]"
        if isinstance(step, Blur) and step.sigma > limits.max_sigma:
            raise SpecError(
                f"{where}.sigma: {step.sigma:g} is above the limit "
                f"{limits.max_sigma:g} (IMGSTREAM_MAX_SIGMA)"
            )
        if isinstance(step, Resize):
            for name in ("width", "height"):
                value = getattr(step, name)
                if value is not None and value > limits.max_dimension:
                    raise SpecError(
                        f"{where}.{name}: {value} is above the limit "
                        f"{limits.max_dimension} px (IMGSTREAM_MAX_DIMENSION)"
                    )


def parse_operations_json(text: str) -> tuple[Operation, ...]:
    """Parse the JSON ``operations`` list used by the API and on the wire."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"operations: not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise SpecError('operations: must be a JSON list such as [{"op": "grayscale"}]')
    if not raw:
        raise SpecError("operations: the list is empty; give at least one step")
    try:
        return tuple(_OPERATIONS_ADAPTER.validate_python(raw))
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, "operations")) from None


_SINGLE_OPERATION_FIELDS = {
    "resize": ("width", "height", "fit", "enlarge"),
    "grayscale": (),
    "blur": ("sigma",),
}


def spec_from_form(fields: Mapping[str, str], limits: Limits) -> JobSpec:
    """Build a job spec from the upload form: ``operation`` + its parameters, or ``operations``.

    Empty form values count as absent, so an HTML form can always send every input.
    """
    present = {key: value.strip() for key, value in fields.items() if value.strip() != ""}
    single, chain = present.get("operation"), present.get("operations")
    if single is not None and chain is not None:
        raise SpecError("give either operation or operations, not both")
    if chain is not None:
        operations = parse_operations_json(chain)
    elif single is not None:
        if single not in _SINGLE_OPERATION_FIELDS:
            raise SpecError(
                f"operation: unknown operation {single!r}; use one of resize, grayscale, blur"
            )
        params: dict[str, str] = {
            name: present[name] for name in _SINGLE_OPERATION_FIELDS[single] if name in present
        }
        operations = parse_operations_json(json.dumps([{"op": single, **params}]))
    else:
        raise SpecError(
            "operation is required (resize, grayscale or blur), or operations as a JSON list"
        )
    try:
        spec = JobSpec(operations=operations, format=present.get("format"))
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from None
    check_limits(spec, limits)
    return spec
