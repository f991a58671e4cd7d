"""What a job asks for: the operation specs, validated, with no HTTP or Redis in sight.

A job is a pipeline of steps applied in order (see ``steps``) and output options (format,
quality, a size budget, metadata; see ``output``). The same models and the same operator
limits (``limits``) validate the web form, the JSON ``operations`` list and every stream
entry a worker reads, whoever wrote it. This module is the one place that names the form's
fields.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from imgstream.limits import Limits
from imgstream.output import (
    FORMAT_ALIASES,
    LOSSY_FORMATS,
    OUTPUT_FIELDS,
    Format,
    MaxBytes,
    OutputFormat,
    Quality,
    lossless_problem,
    output_fields,
)
from imgstream.steps import (
    ABSOLUTE_MAX_SIDE as ABSOLUTE_MAX_SIDE,
)
from imgstream.steps import (
    OPERATION_NAMES,
    STEP_FIELDS,
    STEPS,
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
)

__all__ = [
    "ABSOLUTE_MAX_SIDE",
    "FORMAT_ALIASES",
    "LOSSY_FORMATS",
    "OPERATION_NAMES",
    "OUTPUT_FIELDS",
    "STEPS",
    "STEP_FIELDS",
    "Adjust",
    "Blur",
    "Crop",
    "Direction",
    "Fit",
    "Flip",
    "Gravity",
    "Grayscale",
    "JobSpec",
    "LimitError",
    "Limits",
    "Operation",
    "OutputFormat",
    "Pixelate",
    "Resize",
    "Rotate",
    "Sharpen",
    "SpecError",
    "Trim",
]


class SpecError(ValueError):
    """A job spec a client sent is invalid; the message is meant for a person."""


class LimitError(SpecError):
    """A valid spec beyond an operator's limit; the message names the setting."""


FORM_FIELDS = (
    "image",
    "operation",
    "operations",
    *dict.fromkeys(field for fields in STEP_FIELDS.values() for field in fields),
    *OUTPUT_FIELDS,
    "callback_url",
)
"""Every field of the upload form (``POST /api/jobs``); any other is refused. ``callback_url``
is the API's (a webhook), not the job spec's."""


class JobSpec(BaseModel):
    """The whole request: steps in order, and how to encode the result.

    ``format`` ``None`` follows the input; ``quality`` ``None`` is the format's default;
    ``max_bytes`` lowers the quality of a lossy format until the result fits; ``strip``
    removes EXIF, XMP, GPS and comments and converts to sRGB (``False`` keeps them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations: tuple[Operation, ...] = Field(min_length=1)
    format: Format = None
    quality: Quality = None
    max_bytes: MaxBytes = None
    strip: bool = True

    @model_validator(mode="after")
    def _lossy_options(self) -> JobSpec:
        problem = lossless_problem(self.format, self.quality, self.max_bytes)
        if problem:
            raise ValueError(problem)
        return self

    def operations_json(self) -> str:
        return json.dumps([step.to_json() for step in self.operations])

    def output_fields(self) -> dict[str, str]:
        """The output options as wire fields; options at their default are left out."""
        return output_fields(self.format, self.quality, self.max_bytes, self.strip)


_OPERATIONS_ADAPTER: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])
_STEP_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)
_ONE_OF_OPERATIONS = ", ".join(OPERATION_NAMES)


def describe_validation_error(error: ValidationError, root: str = "") -> str:
    """One plain line per problem, e.g. ``operations[0].width: must be at least 1``."""
    parts = []
    for item in error.errors():
        location = root
        for piece in item["loc"]:
            if isinstance(piece, int):
                location += f"[{piece}]"
            elif piece not in OPERATION_NAMES:  # skip the discriminator tag pydantic adds
                location += f".{piece}" if location else str(piece)
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            location += ".op" if location else "op"
        message = _plain_message(item)
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


_PLAIN_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "missing": "is required",
    "string_type": "must be text",
    "string_pattern_mismatch": "must be a colour such as #ff8800",
}


def _plain_message(item: ErrorDetails) -> str:
    """Pydantic's wording of one problem, said as a person would say it."""
    kind, context = item["type"], item.get("ctx") or {}
    got = f" (got {_shown(item.get('input'))})"
    if kind == "union_tag_invalid":
        return f"unknown operation {_shown(context.get('tag'))}; use one of {_ONE_OF_OPERATIONS}"
    if kind == "union_tag_not_found":
        return f"is required: one of {_ONE_OF_OPERATIONS}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return 'each step must be an object such as {"op": "grayscale"}' + got
    if kind == "extra_forbidden":
        step = next((piece for piece in item["loc"] if piece in STEPS), None)
        return _not_a_field(str(step)) if step else "unknown field"
    if kind == "enum":
        expected = str(context.get("expected", "")).replace("'", "")
        return f"must be one of {expected}" + got
    if kind == "too_short":
        return "give at least one step"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    template = _PLAIN_MESSAGES.get(kind)
    if template is None:
        return str(item["msg"])
    message = template.format(**{name: f"{value:g}" if isinstance(value, float) else value
                                 for name, value in context.items()})  # fmt: skip
    return message + (got if kind.endswith(("parsing", "type", "from_float")) else "")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _not_a_field(operation: str) -> str:
    fields = STEP_FIELDS[operation]
    takes = f"takes {', '.join(fields)}" if fields else "takes no parameters"
    return f"not a parameter of {operation} ({operation} {takes})"


def check_limits(spec: JobSpec, limits: Limits, *, single_step: bool = False) -> None:
    """Refuse specs beyond the operator's limits (``LimitError``), naming the setting.

    ``single_step``: the spec came from the form's ``operation`` and its own fields, so a
    problem is located by the field's name alone.
    """
    if len(spec.operations) > limits.max_steps:
        raise LimitError(
            f"the pipeline has {len(spec.operations)} steps; "
            f"the limit is {limits.max_steps} (IMGSTREAM_MAX_STEPS)"
        )
    for index, step in enumerate(spec.operations):
        where = "" if single_step else f"operations[{index}]."
        if isinstance(step, Blur | Sharpen) and step.sigma > limits.max_sigma:
            raise LimitError(
                f"{where}sigma: {step.sigma:g} is above the limit "
                f"{limits.max_sigma:g} (IMGSTREAM_MAX_SIGMA)"
            )
        if (
            isinstance(step, Resize)
            and step.width is not None
            and step.height is not None
            and (step.fit is Fit.CONTAIN or step.enlarge)
            and step.width * step.height > limits.max_pixels
        ):
            raise LimitError(
                f"{where}width, height: a {step.width}x{step.height} result has "
                f"{step.width * step.height} pixels; the limit is {limits.max_pixels} "
                "(IMGSTREAM_MAX_PIXELS)"
            )
        for name in _SIDES.get(type(step), ()):
            value = getattr(step, name)
            if value is not None and value > limits.max_dimension:
                raise LimitError(
                    f"{where}{name}: {value} is above the limit "
                    f"{limits.max_dimension} px (IMGSTREAM_MAX_DIMENSION)"
                )


_SIDES: dict[type, tuple[str, ...]] = {
    Resize: ("width", "height"),
    Crop: ("left", "top", "width", "height"),
    Pixelate: ("size",),
}
"""The parameters of each step that are lengths in px, bounded by IMGSTREAM_MAX_DIMENSION."""


def check_geometry(spec: JobSpec, width: int, height: int, *, single_step: bool = False) -> None:
    """Refuse a crop that reaches outside the image, where its size at that step is known.

    The size is followed from the source's through steps whose effect on it is exact
    (crops, quarter turns, and steps that keep it); after any other the worker checks.
    """
    size: tuple[int, int] | None = (width, height)
    for index, step in enumerate(spec.operations):
        if size is None:
            return
        if isinstance(step, Crop):
            where = "" if single_step else f"operations[{index}]: "
            problem = crop_problem(step, *size)
            if problem:
                raise SpecError(where + problem)
            size = (step.width, step.height)
        elif isinstance(step, Rotate) and step.quarter_turns in (1, 3):
            size = (size[1], size[0])
        elif isinstance(step, Resize | Trim) or (
            isinstance(step, Rotate) and step.quarter_turns is None
        ):
            size = None


def crop_problem(step: Crop, width: int, height: int) -> str:
    """What is wrong with cropping a ``width`` x ``height`` image to ``step``'s box, or ``""``."""
    if step.left + step.width <= width and step.top + step.height <= height:
        return ""
    return (
        f"the crop box {step.width}x{step.height} at ({step.left}, {step.top}) reaches outside "
        f"the {width}x{height} image"
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


def spec_from_entry(operations: str, output: Mapping[str, str], limits: Limits) -> JobSpec:
    """The spec of a stream entry, validated and limited exactly as the API's form is.

    ``output`` holds the entry's output option fields (``OUTPUT_FIELDS``; absent or empty
    ones take their defaults). A worker calls this for every entry, whatever wrote it:
    ``SpecError`` for an invalid spec, ``LimitError`` for one beyond the operator's limits.
    """
    spec = _spec(parse_operations_json(operations), output)
    check_limits(spec, limits)
    return spec


def _spec(operations: tuple[Operation, ...], output: Mapping[str, str]) -> JobSpec:
    options = {name: output[name] for name in OUTPUT_FIELDS if output.get(name)}
    try:
        return JobSpec(operations=operations, **options)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from None


def spec_from_form(fields: Mapping[str, str], limits: Limits) -> JobSpec:
    """Build a job spec from the upload form's text fields: ``operation`` + its parameters,
    or ``operations``; and the output options.

    Empty values count as absent, so an HTML form can always send every input. A field the
    form does not have, or one the chosen operation does not take, is refused by name.
    """
    _refuse_unknown_fields(fields)
    present = {key: value.strip() for key, value in fields.items() if value.strip() != ""}
    single, chain = present.get("operation"), present.get("operations")
    parameters = [
        name for name in present if name not in ("operation", "operations", *OUTPUT_FIELDS)
    ]
    if single is not None and chain is not None:
        raise SpecError("give either operation or operations, not both")
    if chain is not None:
        if parameters:
            raise SpecError(
                f"{parameters[0]}: with operations, give each step's parameters inside its "
                'step, e.g. [{"op": "resize", "width": 800}]'
            )
        operations = parse_operations_json(chain)
    elif single is not None:
        operations = (_single_step(single, {name: present[name] for name in parameters}),)
    else:
        raise SpecError(
            f"operation is required ({_ONE_OF_OPERATIONS}), or operations as a JSON list"
        )
    spec = _spec(operations, present)
    check_limits(spec, limits, single_step=single is not None)
    return spec


def _refuse_unknown_fields(fields: Mapping[str, str]) -> None:
    for name in fields:
        if name == "image":
            raise SpecError("image: must be the image file, not text")
        if name not in FORM_FIELDS:
            close = difflib.get_close_matches(name, FORM_FIELDS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise SpecError(f"{name}: unknown field; {hint}the form takes {', '.join(FORM_FIELDS)}")


def _single_step(operation: str, parameters: Mapping[str, str]) -> Operation:
    if operation not in STEPS:
        raise SpecError(
            f"operation: unknown operation {operation!r}; use one of {_ONE_OF_OPERATIONS}"
        )
    for name in parameters:
        if name not in STEP_FIELDS[operation]:
            raise SpecError(f"{name}: {_not_a_field(operation)}")
    try:
        return _STEP_ADAPTER.validate_python({"op": operation, **parameters})
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from None
