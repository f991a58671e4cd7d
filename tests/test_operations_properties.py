"""Properties of job-spec validation, with Hypothesis: whatever a client sends, the only
failure is ``SpecError`` (a 422), and every valid spec survives its trips through the form,
the JSON list on the wire, and back."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgstream.operations import (
    Blur,
    Fit,
    Grayscale,
    JobSpec,
    LimitError,
    Limits,
    OutputFormat,
    Resize,
    SpecError,
    check_limits,
    parse_operations_json,
    spec_from_form,
)

LIMITS = Limits()
PROPERTIES = settings(max_examples=200, deadline=None, database=None)
FIELDS = ("operation", "operations", "width", "height", "fit", "enlarge", "sigma", "format")
PYDANTIC_WORDING = re.compile(r"Input (should|tag)|Extra inputs|Unable to extract|Value error")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
step_like = st.fixed_dictionaries(
    {"op": st.sampled_from(["resize", "grayscale", "blur", "explode", ""])},
    optional={
        "width": json_values,
        "height": json_values,
        "fit": st.sampled_from(["inside", "cover", "fill", "stretch"]) | json_values,
        "enlarge": json_values,
        "sigma": json_values,
        "extra": json_values,
    },
)
operations_text = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.lists(step_like, max_size=12).map(json.dumps),
    st.integers(0, 500).map(lambda depth: "[" * depth + "]" * depth),
)
field_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["resize", "grayscale", "blur", "jpeg", "webp", "gif", "cover", "true"]),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
forms = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8).flatmap(
    lambda form: st.one_of(
        st.just(form),
        operations_text.map(lambda ops: {**form, "operations": ops}),
    )
)


@PROPERTIES
@given(form=forms)
def test_any_form_is_a_spec_or_a_spec_error(form: dict[str, str]) -> None:
    try:
        spec = spec_from_form(form, LIMITS)
    except SpecError as exc:
        assert str(exc)  # a message for a person, never empty
        assert not PYDANTIC_WORDING.search(str(exc)), str(exc)
        return
    assert 1 <= len(spec.operations) <= LIMITS.max_steps
    assert parse_operations_json(spec.operations_json()) == spec.operations


@PROPERTIES
@given(text=operations_text)
def test_any_operations_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        parsed = parse_operations_json(text)
    except SpecError as exc:
        assert str(exc) and not PYDANTIC_WORDING.search(str(exc)), str(exc)
        return
    raw = json.loads(text)
    assert isinstance(raw, list) and len(parsed) == len(raw)
    assert [step.op for step in parsed] == [item["op"] for item in raw]
    assert parse_operations_json(JobSpec(operations=parsed).operations_json()) == parsed


sides = st.integers(1, LIMITS.max_dimension)
resizes = st.one_of(
    st.builds(Resize, width=sides, height=st.none() | sides, fit=st.sampled_from(Fit)),
    st.builds(Resize, width=st.none(), height=sides, fit=st.sampled_from(Fit)),
).flatmap(
    lambda step: st.booleans().map(lambda enlarge: step.model_copy(update={"enlarge": enlarge}))
)
blurs = st.builds(
    Blur, sigma=st.floats(0, LIMITS.max_sigma, exclude_min=True, allow_nan=False).filter(bool)
)


def within_limits(step: Any) -> bool:
    """Valid and inside the operator's limits (a padded or enlarged box has a pixel limit)."""
    try:
        check_limits(JobSpec(operations=(step,)), LIMITS)
    except LimitError:
        return False
    return True


steps = st.one_of(resizes, st.just(Grayscale()), blurs).filter(within_limits)
specs = st.builds(
    JobSpec,
    operations=st.lists(steps, min_size=1, max_size=LIMITS.max_steps).map(tuple),
    format=st.none() | st.sampled_from(OutputFormat),
)


@PROPERTIES
@given(spec=specs)
def test_valid_specs_round_trip_through_the_form(spec: JobSpec) -> None:
    form = {"operations": spec.operations_json()}
    if spec.format is not None:
        form["format"] = spec.format.value
    assert spec_from_form(form, LIMITS) == spec
    assert parse_operations_json(spec.operations_json()) == spec.operations


@PROPERTIES
@given(step=steps, output=st.none() | st.sampled_from(OutputFormat))
def test_a_single_step_round_trips_as_form_fields(step: Any, output: OutputFormat | None) -> None:
    form = {"operation": step.op}
    for name, value in step.model_dump(exclude={"op"}).items():
        if value is not None:
            form[name] = json.dumps(value) if isinstance(value, bool) else str(value)
    if output is not None:
        form["format"] = output.value
    assert spec_from_form(form, LIMITS) == JobSpec(operations=(step,), format=output)


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"operation": "blur", "sigma": "100.5"}, "IMGSTREAM_MAX_SIGMA"),
        ({"operation": "resize", "width": "20001"}, "IMGSTREAM_MAX_DIMENSION"),
        ({"operations": json.dumps([{"op": "grayscale"}] * 11)}, "IMGSTREAM_MAX_STEPS"),
    ],
)
def test_limits_name_their_setting(form: dict[str, str], named: str) -> None:
    with pytest.raises(SpecError, match=named):
        spec_from_form(form, LIMITS)
