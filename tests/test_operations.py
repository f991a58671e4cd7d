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


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"operation": "blur", "sigm": "40"},
            "sigm: unknown field; did you mean sigma? the form takes image, operation, "
            "operations, width, height, fit, enlarge, gravity, background, sigma, left, top, "
            "angle, direction, size, brightness, contrast, saturation, threshold, format, "
            "quality, max_bytes, strip",
        ),
        (
            {"operation": "grayscale", "width": "100"},
            "width: not a parameter of grayscale (grayscale takes no parameters)",
        ),
        (
            {"operation": "resize", "width": "100", "sigma": "3"},
            "sigma: not a parameter of resize "
            "(resize takes width, height, fit, enlarge, gravity, background)",
        ),
        (
            {"operations": '[{"op":"grayscale"}]', "width": "100"},
            "width: with operations, give each step's parameters inside its step",
        ),
        ({"operation": "grayscale", "image": "photo.jpg"}, "image: must be the image file"),
    ],
)
def test_fields_the_form_or_the_operation_does_not_have_are_refused_by_name(
    fields: dict[str, str], expected: str
) -> None:
    with pytest.raises(SpecError) as refused:
        spec_from_form(fields, LIMITS)
    assert str(refused.value).startswith(expected)


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("jpg", OutputFormat.JPEG),
        ("jpe", OutputFormat.JPEG),
        ("JPEG", OutputFormat.JPEG),
        ("tif", OutputFormat.TIFF),
        ("tiff", OutputFormat.TIFF),
        ("webp", OutputFormat.WEBP),
    ],
)
def test_format_names_and_their_common_aliases(name: str, output: OutputFormat) -> None:
    spec = spec_from_form({"operation": "grayscale", "format": name}, LIMITS)
    assert spec.format is output
    assert JobSpec(operations=(Grayscale(),), format=name).format is output  # the wire, too


def test_output_formats_have_their_usual_extensions() -> None:
    assert [f.extension for f in OutputFormat] == ["jpg", "png", "webp", "avif", "gif", "tif"]
    assert OutputFormat.TIFF.media_type == "image/tiff"


# (operations, where, problem): the message is "<where>: <problem>".
CHAIN_ERRORS = [
    ('[{"op":"resize","width":800},{"op":"explode"}]', "operations[1].op",
     "unknown operation 'explode'; use one of resize, grayscale, blur, crop, rotate, flip, "
     "sharpen, pixelate, adjust, trim"),
    ('[{"width":800}]', "operations[0].op", "is required: one of resize, grayscale, blur, crop"),
    ('[{"op":"blur","sigm":3}]', "operations[0].sigm",
     "not a parameter of blur (blur takes sigma)"),
    ('[{"op":"resize","width":"abc"}]', "operations[0].width",
     "must be a whole number (got 'abc')"),
    ('[{"op":"resize","width":0}]', "operations[0].width", "must be at least 1"),
    ('[{"op":"resize","width":9,"fit":"squash"}]', "operations[0].fit",
     "must be one of inside, cover, fill or contain (got 'squash')"),
    ('[{"op":"blur","sigma":0}]', "operations[0].sigma", "must be more than 0"),
    ('[{"op":"resize","width":9,"enlarge":"maybe"}]', "operations[0].enlarge",
     "must be true or false (got 'maybe')"),
    ('["grayscale"]', "operations[0]", 'each step must be an object such as {"op": "grayscale"}'),
    ('[{"op":"resize"}]', "operations[0]", "resize needs width, height or both"),
]  # fmt: skip


@pytest.mark.parametrize(("operations", "where", "problem"), CHAIN_ERRORS)
def test_chain_errors_are_worded_as_plainly_as_the_form_ones(
    operations: str, where: str, problem: str
) -> None:
    with pytest.raises(SpecError) as refused:
        spec_from_form({"operations": operations}, LIMITS)
    assert str(refused.value).startswith(f"{where}: {problem}")


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
        ({"operation": "explode"}, "unknown operation 'explode'"),
        ({"operation": "resize"}, "resize needs width, height or both"),
        (
            {"operation": "resize", "width": "0"},
            "width: must be at least 1",
        ),
        ({"operation": "resize", "width": "-5"}, "width"),
        ({"operation": "resize", "width": "abc"}, "width"),
        ({"operation": "resize", "width": "10", "fit": "squash"}, "fit"),
        ({"operation": "blur", "sigma": "0"}, "sigma"),
        ({"operation": "blur", "sigma": "nan"}, "sigma"),
        (
            {"operation": "blur", "sigma": "101"},
            "sigma: 101 is above the limit 100 (IMGSTREAM_MAX_SIGMA)",
        ),
        ({"operation": "resize", "width": "20001"}, "IMGSTREAM_MAX_DIMENSION"),
        ({"operations": "[{"}, "not valid JSON"),
        ({"operations": "{}"}, "must be a JSON list"),
        ({"operations": "[]"}, "the list is empty"),
        ({"operations": '[{"op":"grayscale","extra":1}]'}, "operations[0].extra: not a parameter"),
        ({"operations": '[{"op":"explode"}]'}, "operations[0]"),
        ({"operations": '["grayscale"]'}, "operations[0]"),
        ({"operation": "grayscale", "operations": '[{"op":"blur"}]'}, "not both"),
        (
            {"operation": "grayscale", "format": "bmp"},
            "format: must be one of jpeg, png, webp, avif, gif or tiff",
        ),
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
