"""imaging against the independent reference (tests/reference.py): every operation, lossless
sources and results, so a wrong kernel, sigma, crop or weight fails."""

from __future__ import annotations

import pytest

from imgstream import imaging
from imgstream.operations import Blur, Fit, Grayscale, JobSpec, Limits, Operation, OutputFormat
from imgstream.operations import Resize as R

import reference
from images import bars, encode, photo

SOURCE = encode(photo(160, 120), "png")
EDGES = encode(bars(160, 120), "png")
RESIZE_TOLERANCE = 1.0
"""Mean difference allowed for a resize (Pillow and libvips round differently); a crop one
pixel off, or another kernel, is several times as far on this noisy source."""
BLUR_TOLERANCE = 1.0
"""Mean difference allowed for a blur; libvips' integer kernel stays well under it, while a
sigma a quarter off is at least twice as far (checked below)."""


def rendered(source: bytes, steps: tuple[Operation, ...]) -> reference.Pixels:
    spec = JobSpec(operations=steps, format=OutputFormat.PNG)
    return reference.pixels(imaging.render(source, spec, Limits()).data)


@pytest.mark.parametrize(
    "step",
    [R(width=80), R(width=53), R(height=40), R(width=60, height=60, fit=Fit.COVER),
     R(width=90, height=40, fit=Fit.COVER), R(width=60, height=40, fit=Fit.FILL)],
    ids=str,
)  # fmt: skip
def test_resize_matches_lanczos(step: R) -> None:
    want = reference.apply([step], reference.pixels(SOURCE))
    assert reference.mean_difference(rendered(SOURCE, (step,)), want) < RESIZE_TOLERANCE


def test_grayscale_is_rec601_luma() -> None:
    got = rendered(SOURCE, (Grayscale(),))
    want = reference.apply([Grayscale()], reference.pixels(SOURCE))
    assert got.ndim == 2
    assert abs(got - want).max() <= 1


@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_blur_has_the_sigma_asked_for(sigma: float) -> None:
    got = rendered(EDGES, (Blur(sigma=sigma),))
    source = reference.pixels(EDGES)
    margin = int(3 * sigma) + 2  # edge handling is not part of the promise
    right = reference.mean_difference(got, reference.apply([Blur(sigma=sigma)], source), margin)
    assert right < BLUR_TOLERANCE
    for wrong in (sigma * 0.75, sigma * 1.25):
        off = reference.mean_difference(got, reference.apply([Blur(sigma=wrong)], source), margin)
        assert off > 1.5 * BLUR_TOLERANCE, f"sigma {wrong} is as close as {sigma}: {off}"


def test_a_chain_matches_step_by_step() -> None:
    chain = (R(width=100), Grayscale(), Blur(sigma=2))
    want = reference.apply(chain, reference.pixels(EDGES))
    assert reference.mean_difference(rendered(EDGES, chain), want, margin=8) < BLUR_TOLERANCE
