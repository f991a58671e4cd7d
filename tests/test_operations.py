"""Operation specs: what is accepted, what is refused, and that messages name the problem."""

from __future__ import annotations

import json

import pytest

from imgstream.operations import (
    Blur,
    Fit,
    Grayscale,
    JobSpec,
    Limits,
    OutputFormat,
    Resize,
    SpecError,
    parse_operations_json,
    spec_from_form,
)

LIMITS = Limits()


def test_single_resize_from_form_fields() -> None:
    spec = spec_from_form({"operation": "resize", "width": "800", "fit": "cover"}, LIMITS)
    assert spec.operations == (Resize(width=800, fit=Fit.COVER),)
    assert spec.format is None


def test_form_values_are_coerced_and_empty_values_ignored() -> None:
    fields = {"operation": "resize", "height": "300", "width": "", "enlarge": "true", "format": ""}
    spec = spec_from_form(fields, LIMITS)
    assert spec.operations == (Resize(height=300, enlarge=True),)


def test_parameters_of_other_operations_are_ignored_for_a_single_operation() -> None:
    spec = spec_from_form({"operation": "grayscale", "width": "800"}, LIMITS)
    assert spec.operations == (Grayscale(),)


def test_blur_default_sigma() -> None:
    assert spec_from_form({"operation": "blur"}, LIMITS).operations == (Blur(sigma=2.0),)


def test_chained_operations_keep_their_order() -> None:
    chain = '[{"op":"resize","width":800},{"op":"grayscale"},{"op":"blur","sigma":1.5}]'
    spec = spec_from_form({"operations": chain, "format": "webp"}, LIMITS)
    assert [step.op for step in spec.operations] == ["resize", "grayscale", "blur"]
    assert spec.format is OutputFormat.WEBP


def test_operations_json_round_trips() -> None:
    spec = JobSpec(operations=(Resize(width=10, height=20, fit=Fit.FILL), Blur(sigma=3)))
    assert parse_operations_json(spec.operations_json()) == spec.operations


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "operation is required"),
        ({"operation": "rotate"}, "unknown operation 'rotate'"),
        ({"operation": "resize"}, "resize needs width, height or both"),
        (
            {"operation": "resize", "width": "0"},
            "width: Input should be greater than or equal to 1",
        ),
        ({"operation": "resize", "width": "-5"}, "width"),
        ({"operation": "resize", "width": "abc"}, "width"),
        ({"operation": "resize", "width": "10", "fit": "squash"}, "fit"),
        ({"operation": "blur", "sigma": "0"}, "sigma"),
        ({"operation": "blur", "sigma": "nan"}, "sigma"),
        ({"operation": "blur", "sigma": "101"}, "IMGSTREAM_MAX_SIGMA"),
        ({"operation": "resize", "width": "20001"}, "IMGSTREAM_MAX_DIMENSION"),
        ({"operations": "[{"}, "not valid JSON"),
        ({"operations": "{}"}, "must be a JSON list"),
        ({"operations": "[]"}, "the list is empty"),
        ({"operations": '[{"op":"grayscale","extra":1}]'}, "extra"),
        ({"operations": '[{"op":"sharpen"}]'}, "operations[0]"),
        ({"operations": '["grayscale"]'}, "operations[0]"),
        ({"operation": "grayscale", "operations": '[{"op":"blur"}]'}, "not both"),
        ({"operation": "grayscale", "format": "gif"}, "format"),
    ],
)
def test_invalid_specs_are_refused_with_a_readable_message(
    fields: dict[str, str], expected: str
) -> None:
    with pytest.raises(SpecError) as refused:
        spec_from_form(fields, LIMITS)
    assert expected in str(refused.value)
    assert "Traceback" not in str(refused.value)


def test_pipeline_length_is_capped() -> None:
    chain = json.dumps([{"op": "grayscale"}] * 11)
    with pytest.raises(SpecError, match="IMGSTREAM_MAX_STEPS"):
        spec_from_form({"operations": chain}, LIMITS)
    assert (
        len(
            spec_from_form(
                {"operations": json.dumps([{"op": "grayscale"}] * 10)}, LIMITS
            ).operations
        )
        == 10
    )


def test_deeply_nested_json_is_refused_cleanly() -> None:
    with pytest.raises(SpecError):
        spec_from_form({"operations": "[" * 100_000 + "]" * 100_000}, LIMITS)
