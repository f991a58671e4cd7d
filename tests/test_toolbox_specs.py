"""Specs of the toolbox steps and output options: one validation for the form, the chain
and the stream entry; every bad parameter refused with a message that names it."""

from __future__ import annotations

import json

import pytest

from imgstream.jobs import StreamEntry
from imgstream.operations import (
    Adjust,
    Crop,
    Direction,
    Flip,
    Gravity,
    JobSpec,
    LimitError,
    Limits,
    OutputFormat,
    Pixelate,
    Resize,
    Rotate,
    Sharpen,
    SpecError,
    Trim,
    check_geometry,
    parse_operations_json,
    spec_from_entry,
    spec_from_form,
)

LIMITS = Limits()


def test_every_new_step_from_form_fields() -> None:
    cases = {
        "crop": ({"left": "5", "top": "6", "width": "70", "height": "80"},
                 Crop(left=5, top=6, width=70, height=80)),
        "rotate": ({"angle": "90"}, Rotate(angle=90)),
        "flip": ({"direction": "vertical"}, Flip(direction=Direction.VERTICAL)),
        "sharpen": ({}, Sharpen(sigma=1.0)),
        "pixelate": ({"size": "12"}, Pixelate(size=12)),
        "adjust": ({"saturation": "0", "brightness": "1.2"},
                   Adjust(saturation=0, brightness=1.2)),
        "trim": ({}, Trim(threshold=10)),
    }  # fmt: skip
    for operation, (parameters, step) in cases.items():
        spec = spec_from_form({"operation": operation, **parameters}, LIMITS)
        assert spec.operations == (step,), operation


def test_resize_gains_contain_gravity_and_background() -> None:
    spec = spec_from_form(
        {"operation": "resize", "width": "50", "height": "50", "fit": "cover", "gravity": "east"},
        LIMITS,
    )
    assert spec.operations == (Resize(width=50, height=50, fit="cover", gravity=Gravity.EAST),)
    contain = spec_from_form(
        {"operation": "resize", "width": "50", "height": "40", "fit": "contain",
         "background": "#FF8800"}, LIMITS
    ).operations[0]  # fmt: skip
    assert isinstance(contain, Resize) and contain.background == "#ff8800"


# (fields, the message starts with)
FORM_REFUSALS = [
    ({"operation": "crop", "width": "10"}, "height: is required"),
    ({"operation": "crop", "width": "10", "height": "10", "left": "-1"},
     "left: must be at least 0"),
    ({"operation": "rotate"}, "angle: is required"),
    ({"operation": "rotate", "angle": "400"}, "angle: must be at most 360"),
    ({"operation": "rotate", "angle": "inf"}, "angle: must be a finite number"),
    ({"operation": "rotate", "angle": "90", "background": "red"},
     "background: must be a colour such as #ff8800"),
    ({"operation": "flip"}, "direction: is required"),
    ({"operation": "flip", "direction": "diagonal"},
     "direction: must be one of horizontal or vertical (got 'diagonal')"),
    ({"operation": "sharpen", "sigma": "0"}, "sigma: must be more than 0"),
    ({"operation": "pixelate", "size": "0"}, "size: must be at least 1"),
    ({"operation": "pixelate", "size": "2.5"}, "size: must be a whole number"),
    ({"operation": "adjust", "contrast": "-1"}, "contrast: must be at least 0"),
    ({"operation": "adjust", "saturation": "11"}, "saturation: must be at most 10"),
    ({"operation": "adjust", "brightness": "bright"}, "brightness: must be a number"),
    ({"operation": "trim", "threshold": "256"}, "threshold: must be at most 255"),
    ({"operation": "trim", "angle": "3"}, "angle: not a parameter of trim (trim takes threshold)"),
    ({"operation": "resize", "width": "9", "gravity": "east"}, "gravity applies to fit=cover"),
    ({"operation": "resize", "width": "9", "height": "9", "fit": "cover", "gravity": "up"},
     "gravity: must be one of centre, north, south, east, west or smart"),
    ({"operation": "resize", "width": "9", "background": "#000000"},
     "background applies to fit=contain"),
    ({"operation": "sharpen", "sigma": "101"},
     "sigma: 101 is above the limit 100 (IMGSTREAM_MAX_SIGMA)"),
    ({"operation": "pixelate", "size": "20001"}, "size: 20001 is above the limit 20000 px"),
    ({"operation": "crop", "width": "20001", "height": "5"}, "width: 20001 is above the limit"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "says"), FORM_REFUSALS)
def test_bad_parameters_are_refused_by_name(fields: dict[str, str], says: str) -> None:
    with pytest.raises(SpecError) as refused:
        spec_from_form(fields, LIMITS)
    assert str(refused.value).startswith(says), refused.value


@pytest.mark.parametrize(("fields", "says"), FORM_REFUSALS)
def test_the_chain_and_the_stream_refuse_the_same(fields: dict[str, str], says: str) -> None:
    step = {"op": fields["operation"]} | {
        name: _json_value(value) for name, value in fields.items() if name != "operation"
    }
    chain = json.dumps([{"op": "grayscale"}, step])
    with pytest.raises(SpecError) as from_form:
        spec_from_form({"operations": chain}, LIMITS)
    with pytest.raises(SpecError) as from_stream:
        spec_from_entry(chain, {}, LIMITS)
    assert str(from_form.value) == str(from_stream.value)
    assert str(from_form.value).startswith("operations[1]"), from_form.value


def _json_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_the_stream_entry_carries_the_output_options() -> None:
    spec = spec_from_form(
        {"operation": "trim", "format": "webp", "quality": "55", "max_bytes": "9000",
         "strip": "false"}, LIMITS
    )  # fmt: skip
    output = spec.output_fields()
    assert output == {"format": "webp", "quality": "55", "max_bytes": "9000", "strip": "false"}
    format_ = output.pop("format")
    entry = StreamEntry(
        job_id="a" * 32, operations=spec.operations_json(), format=format_,
        options=tuple(output.items()),
    )  # fmt: skip
    fields = entry.to_fields()
    assert StreamEntry.from_fields(fields) == entry
    again = spec_from_entry(fields["operations"], StreamEntry.from_fields(fields).output(), LIMITS)
    assert again == spec
    assert (again.format, again.quality, again.max_bytes, again.strip) == (
        OutputFormat.WEBP, 55, 9000, False,
    )  # fmt: skip


def test_defaults_stay_off_the_wire() -> None:
    spec = JobSpec(operations=(Resize(width=10),))
    assert spec.output_fields() == {}
    assert json.loads(spec.operations_json()) == [
        {"op": "resize", "width": 10, "height": None, "fit": "inside", "enlarge": False}
    ]
    steps = (Resize(width=5, height=5, fit="contain", background="#102030"), Rotate(angle=30))
    assert parse_operations_json(JobSpec(operations=steps).operations_json()) == steps


def test_a_padded_or_enlarged_box_beyond_the_pixel_limit_is_refused() -> None:
    limits = Limits(max_pixels=1_000_000)
    for fit, enlarge in (("contain", "false"), ("fill", "true")):
        fields = {"operation": "resize", "width": "2000", "height": "1000", "fit": fit,
                  "enlarge": enlarge}  # fmt: skip
        with pytest.raises(LimitError) as refused:
            spec_from_form(fields, limits)
        assert str(refused.value) == (
            "width, height: a 2000x1000 result has 2000000 pixels; the limit is 1000000 "
            "(IMGSTREAM_MAX_PIXELS)"
        )
    shrink_only = {"operation": "resize", "width": "2000", "height": "1000", "fit": "cover"}
    assert spec_from_form(shrink_only, limits).operations[0] == Resize(
        width=2000, height=1000, fit="cover"
    )


def test_the_stream_applies_the_operators_limits() -> None:
    with pytest.raises(LimitError, match="IMGSTREAM_MAX_SIGMA"):
        spec_from_entry('[{"op":"sharpen","sigma":50}]', {}, Limits(max_sigma=10))
    with pytest.raises(SpecError, match="quality: must be at most 100"):
        spec_from_entry('[{"op":"trim"}]', {"format": "jpeg", "quality": "900"}, LIMITS)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([Crop(left=50, top=0, width=60, height=10)], "reaches outside the 100x80 image"),
        ([Rotate(angle=90), Crop(width=90, height=10)], "reaches outside the 80x100 image"),
        ([Crop(width=50, height=50), Flip(direction="vertical"), Crop(left=1, width=50, height=5)],
         "operations[2]: the crop box 50x5 at (1, 0) reaches outside the 50x50 image"),
    ],
)  # fmt: skip
def test_a_crop_outside_a_known_size_is_refused(steps: list[Crop], problem: str) -> None:
    with pytest.raises(SpecError) as refused:
        check_geometry(JobSpec(operations=tuple(steps)), 100, 80)
    assert problem in str(refused.value)


def test_after_a_step_of_unknown_size_the_worker_checks() -> None:
    for first in (Trim(), Resize(width=10), Rotate(angle=10)):
        check_geometry(JobSpec(operations=(first, Crop(width=500, height=500))), 100, 80)
