"""The steps a pipeline is made of: their names, parameters, defaults and bounds.

Each step is a frozen model; ``operations`` validates lists of them (form, chain and stream
alike) and ``imaging`` applies them. Bounds here hold whatever the operator sets; the
operator's own limits are checked in ``operations.check_limits``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ABSOLUTE_MAX_SIDE = 100_000
"""Hard ceiling on any requested side, whatever the settings say (libvips allows 10M)."""

Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$"), AfterValidator(str.lower)]
"""``#rrggbb``, kept in lower case."""


def colour_values(colour: str) -> list[float]:
    """``#rrggbb`` as ``[r, g, b]``, 0-255."""
    return [float(int(colour[index : index + 2], 16)) for index in (1, 3, 5)]


class Fit(StrEnum):
    INSIDE = "inside"
    COVER = "cover"
    FILL = "fill"
    CONTAIN = "contain"


class Gravity(StrEnum):
    """Which part of the image ``cover`` keeps; ``smart`` looks for the most interesting part."""

    CENTRE = "centre"
    NORTH = "north"
    SOUTH = "south"
    EAST = "east"
    WEST = "west"
    SMART = "smart"


class Direction(StrEnum):
    HORIZONTAL = "horizontal"
    VERTICAL = "vertical"


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quiet_defaults: ClassVar[frozenset[str]] = frozenset()
    """Fields left out of the step's JSON while they hold their default."""

    def to_json(self) -> dict[str, Any]:
        """The step as it is stored and shown, in the shape ``operations`` reads back."""
        data = self.model_dump(mode="json")
        for name in self.quiet_defaults:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name)
        return data


_Side = Field(default=None, ge=1, le=ABSOLUTE_MAX_SIDE)
_Multiplier = Field(default=1.0, ge=0, le=10, allow_inf_nan=False)


class Resize(_Step):
    op: Literal["resize"] = "resize"
    width: int | None = _Side
    height: int | None = _Side
    fit: Fit = Fit.INSIDE
    enlarge: bool = False
    gravity: Gravity = Gravity.CENTRE
    background: Colour = "#ffffff"

    quiet_defaults: ClassVar[frozenset[str]] = frozenset({"gravity", "background"})

    @model_validator(mode="after")
    def _consistent(self) -> Resize:
        if self.width is None and self.height is None:
            raise ValueError("resize needs width, height or both")
        if self.gravity is not Gravity.CENTRE and self.fit is not Fit.COVER:
            raise ValueError("gravity applies to fit=cover only")
        if self.background != "#ffffff" and self.fit is not Fit.CONTAIN:
            raise ValueError("background applies to fit=contain only")
        return self


class Grayscale(_Step):
    op: Literal["grayscale"] = "grayscale"


class Blur(_Step):
    op: Literal["blur"] = "blur"
    sigma: float = Field(default=2.0, gt=0, le=1000, allow_inf_nan=False)


class Crop(_Step):
    """A box of the image as it is at this step; a box reaching outside it is an error."""

    op: Literal["crop"] = "crop"
    left: int = Field(default=0, ge=0, le=ABSOLUTE_MAX_SIDE)
    top: int = Field(default=0, ge=0, le=ABSOLUTE_MAX_SIDE)
    width: int = Field(ge=1, le=ABSOLUTE_MAX_SIDE)
    height: int = Field(ge=1, le=ABSOLUTE_MAX_SIDE)


class Rotate(_Step):
    """Clockwise; multiples of 90 turn the pixels losslessly, other angles fill the corners."""

    op: Literal["rotate"] = "rotate"
    angle: float = Field(ge=-360, le=360, allow_inf_nan=False)
    background: Colour | None = None
    """The corners' colour; not given: transparent when the image has alpha, else white."""

    @property
    def quarter_turns(self) -> int | None:
        """0-3 when the angle is a multiple of 90 degrees, else ``None``."""
        return int(self.angle // 90) % 4 if self.angle % 90 == 0 else None


class Flip(_Step):
    op: Literal["flip"] = "flip"
    direction: Direction
    """``horizontal`` mirrors left and right, ``vertical`` top and bottom."""


class Sharpen(_Step):
    op: Literal["sharpen"] = "sharpen"
    sigma: float = Field(default=1.0, gt=0, le=1000, allow_inf_nan=False)


class Pixelate(_Step):
    op: Literal["pixelate"] = "pixelate"
    size: int = Field(default=10, ge=1, le=ABSOLUTE_MAX_SIDE)
    """The side of a block in px."""


class Adjust(_Step):
    """Multipliers: 1 leaves a property unchanged; saturation 0 is grey."""

    op: Literal["adjust"] = "adjust"
    brightness: float = _Multiplier
    contrast: float = _Multiplier
    saturation: float = _Multiplier


class Trim(_Step):
    """Removes borders of the top-left pixel's colour, within ``threshold``."""

    op: Literal["trim"] = "trim"
    threshold: float = Field(default=10.0, ge=0, le=255, allow_inf_nan=False)


AnyStep = Resize | Grayscale | Blur | Crop | Rotate | Flip | Sharpen | Pixelate | Adjust | Trim
Operation = Annotated[AnyStep, Field(discriminator="op")]
STEPS: dict[str, type[_Step]] = {
    model.model_fields["op"].default: model
    for model in (Resize, Grayscale, Blur, Crop, Rotate, Flip, Sharpen, Pixelate, Adjust, Trim)
}
OPERATION_NAMES = tuple(STEPS)
OPERATION_WEIGHTS: dict[str, int] = {
    "blur": 8,
    "sharpen": 6,
    "resize": 4,
    "rotate": 3,
    "trim": 3,
    "pixelate": 2,
    "adjust": 2,
    "crop": 1,
    "flip": 1,
    "grayscale": 1,
}
"""How heavy each operation is, relative to the others (a convolution or a resampling costs
more per pixel than a point operation or a copy). With ``IMGSTREAM_STREAM_PER_OPERATION`` a
chain goes to the lane of its heaviest step (``jobs.lane_of``): slow work queues apart, and a
worker serving only light lanes never waits behind it. Documented in docs/wire-format.md."""
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(field for field in model.model_fields if field != "op")
    for name, model in STEPS.items()
}
"""The parameters each operation takes, in the form and in a step of ``operations``."""
