"""The toolbox steps on real pixels, each checked against the same transform done
independently: Pillow decodes the results and numpy does the reference arithmetic, on
lossless PNG sources, so a geometric step must match to the pixel."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from imgstream.imaging import OutsideImage, render
from imgstream.operations import (
    Adjust,
    Crop,
    Flip,
    Grayscale,
    JobSpec,
    Limits,
    Operation,
    OutputFormat,
    Pixelate,
    Resize,
    Rotate,
    Sharpen,
    Trim,
)

import reference
from images import encode, flat, photo

LIMITS = Limits()


def pixels(data: bytes) -> np.ndarray[Any, Any]:
    """Decoded by Pillow, not libvips: the reference reads the result independently."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def run(source: bytes, *steps: Operation, fmt: OutputFormat = OutputFormat.PNG) -> bytes:
    return render(source, JobSpec(operations=steps, format=fmt), LIMITS).data


def png(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source() -> bytes:
    """A noisy 90x60 photo-like PNG: every pixel differs from its neighbours."""
    return encode(photo(90, 60), "png")


@pytest.fixture(scope="module")
def original(source: bytes) -> np.ndarray[Any, Any]:
    return pixels(source)


def test_crop_is_the_same_box(source: bytes, original: np.ndarray[Any, Any]) -> None:
    result = pixels(run(source, Crop(left=13, top=7, width=40, height=25)))
    assert np.array_equal(result, original[7:32, 13:53])


@pytest.mark.parametrize(("angle", "turns"), [(90, -1), (180, 2), (270, 1), (-90, 1), (360, 0)])
def test_quarter_turns_are_the_same_transpose(
    source: bytes, original: np.ndarray[Any, Any], angle: float, turns: int
) -> None:
    """Clockwise: numpy's ``rot90`` turns counter-clockwise, hence the negative count."""
    assert np.array_equal(pixels(run(source, Rotate(angle=angle))), np.rot90(original, turns))


def test_other_angles_grow_the_canvas_and_fill_the_corners(source: bytes) -> None:
    result = pixels(run(source, Rotate(angle=45, background="#ff0000")))
    side = (90 + 60) / 2**0.5
    assert abs(result.shape[1] - side) <= 2 and abs(result.shape[0] - side) <= 2
    for corner in (result[0, 0], result[0, -1], result[-1, 0], result[-1, -1]):
        assert corner.tolist() == [255, 0, 0]


def test_a_turn_without_background_keeps_transparency() -> None:
    data = encode(flat(40, 20, [10, 200, 30, 255]), "png")
    result = render(data, JobSpec(operations=(Rotate(angle=30),)), LIMITS)
    corners = np.asarray(Image.open(io.BytesIO(result.data)))
    assert corners.shape[2] == 4 and corners[0, 0, 3] == 0
    assert corners[corners.shape[0] // 2, corners.shape[1] // 2].tolist() == [10, 200, 30, 255]


@pytest.mark.parametrize(("direction", "axis"), [("horizontal", 1), ("vertical", 0)])
def test_flips_are_the_same_mirror(
    source: bytes, original: np.ndarray[Any, Any], direction: str, axis: int
) -> None:
    result = pixels(run(source, Flip(direction=direction)))  # type: ignore[arg-type]
    assert np.array_equal(result, np.flip(original, axis))


def edge_energy(image: np.ndarray[Any, Any]) -> float:
    """The mean squared difference between neighbours: steeper edges, more energy."""
    wide = image.astype(np.float64)
    return float((np.diff(wide, axis=1) ** 2).mean() + (np.diff(wide, axis=0) ** 2).mean())


def test_sharpen_raises_edge_energy() -> None:
    """Soft edges (a blurred checkerboard of 10 px squares) become steeper."""
    board = (np.indices((60, 90)) // 10).sum(axis=0) % 2 * 60 + 100  # no clipping at 0, 255
    blurred = (
        Image.fromarray(board.astype(np.uint8)).convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    )
    source = png(np.asarray(blurred))
    before = pixels(source)
    for sigma in (1, 2):
        after = pixels(run(source, Sharpen(sigma=sigma)))
        assert edge_energy(after) > 1.1 * edge_energy(before)
        assert np.abs(np.diff(after, axis=1)).max() > np.abs(np.diff(before, axis=1)).max()


@pytest.mark.parametrize("sigma", [0.8, 1.5, 3])
def test_sharpen_is_the_image_plus_its_difference_from_its_blur(
    source: bytes, original: np.ndarray[Any, Any], sigma: float
) -> None:
    """Against numpy: 2 x image - Gaussian blur (libvips' kernel, tests/reference.py)."""
    expected = np.clip(
        np.round(2 * original - reference.blur(original.astype(float), sigma)), 0, 255
    )
    difference = np.abs(pixels(run(source, Sharpen(sigma=sigma))) - expected)
    assert difference.max() <= 1


def test_pixelate_gives_uniform_blocks_of_the_block_means(
    source: bytes, original: np.ndarray[Any, Any]
) -> None:
    result = pixels(run(source, Pixelate(size=15)))
    assert result.shape == original.shape
    for top in range(0, 60, 15):
        for left in range(0, 90, 15):
            block = result[top : top + 15, left : left + 15].reshape(-1, 3)
            assert (block == block[0]).all(), (top, left)
            mean = original[top : top + 15, left : left + 15].reshape(-1, 3).mean(axis=0)
            assert np.abs(block[0] - mean).max() <= 1


def test_saturation_zero_is_grey_and_matches_pillows_luma(
    source: bytes, original: np.ndarray[Any, Any]
) -> None:
    result = pixels(run(source, Adjust(saturation=0)))
    assert (result[..., 0] == result[..., 1]).all() and (result[..., 1] == result[..., 2]).all()
    luma = np.asarray(Image.open(io.BytesIO(source)).convert("L")).astype(np.int16)
    assert np.abs(result[..., 0] - luma).max() <= 1


@pytest.mark.parametrize(
    ("brightness", "contrast", "saturation"), [(1.3, 1, 1), (1, 1.6, 1), (0.7, 0.5, 1.8)]
)
def test_adjust_matches_the_formula(
    source: bytes,
    original: np.ndarray[Any, Any],
    brightness: float,
    contrast: float,
    saturation: float,
) -> None:
    """Saturation towards Rec. 601 grey, brightness a multiplier, contrast around 128."""
    step = Adjust(brightness=brightness, contrast=contrast, saturation=saturation)
    result = pixels(run(source, step))
    value = original.astype(np.float64)
    grey = (value @ np.array([0.299, 0.587, 0.114]))[..., None]
    value = grey + saturation * (value - grey)
    value = (value * brightness - 128) * contrast + 128
    assert np.abs(result - np.clip(np.round(value), 0, 255)).max() <= 1


def test_adjust_on_grey_scales_the_grey(source: bytes) -> None:
    grey = pixels(run(source, Grayscale()))
    brighter = pixels(run(source, Grayscale(), Adjust(brightness=1.2, contrast=1.5)))
    expected = np.clip(np.round((grey * 1.2 - 128) * 1.5 + 128), 0, 255)
    assert np.abs(brighter - expected).max() <= 1


def test_adjust_at_one_changes_nothing(source: bytes, original: np.ndarray[Any, Any]) -> None:
    assert np.array_equal(pixels(run(source, Adjust())), original)


def test_trim_removes_the_border_it_was_given(original: np.ndarray[Any, Any]) -> None:
    framed = np.zeros((60 + 2 * 11, 90 + 23 + 5, 3), np.int16)
    framed[...] = [255, 0, 255]
    framed[11:71, 23:113] = original
    result = pixels(run(png(framed), Trim()))
    assert np.array_equal(result, original)


def test_trim_takes_a_noisy_border_within_its_threshold(original: np.ndarray[Any, Any]) -> None:
    noise = np.random.default_rng(5).integers(-6, 7, size=(80, 110, 3))
    framed = np.clip(np.array([200, 40, 200]) + noise, 0, 255)
    framed[0, 0] = [200, 40, 200]  # the corner is the border's colour
    framed[10:70, 10:100] = original
    assert np.array_equal(pixels(run(png(framed), Trim(threshold=15))), original)
    assert pixels(run(png(framed), Trim(threshold=3))).shape[:2] != original.shape[:2]


def test_trim_leaves_an_image_that_is_all_border() -> None:
    data = encode(flat(30, 20, [40, 40, 40]), "png")
    assert pixels(run(data, Trim())).shape == (20, 30, 3)


def test_contain_pads_with_the_colour(source: bytes) -> None:
    result = pixels(run(source, Resize(width=60, height=60, fit="contain", background="#00ff00")))
    assert result.shape == (60, 60, 3)
    assert (result[:10] == [0, 255, 0]).all() and (result[-10:] == [0, 255, 0]).all()
    middle = result[10:50]
    assert (np.abs(middle - [0, 255, 0]).sum(axis=2) > 60).mean() > 0.95  # the photo


def halves(left: list[int], right: list[int], width: int = 120, height: int = 60) -> bytes:
    image = np.zeros((height, width, 3), np.int16)
    image[:, : width // 2] = left
    image[:, width // 2 :] = right
    return png(image)


@pytest.mark.parametrize(("gravity", "colour"), [("east", [0, 0, 255]), ("west", [255, 0, 0])])
def test_cover_gravity_keeps_that_side(gravity: str, colour: list[int]) -> None:
    """A 120x60 red|blue image covered to 30x30: the kept strip is one half only."""
    source = halves([255, 0, 0], [0, 0, 255])
    result = pixels(run(source, Resize(width=30, height=30, fit="cover", gravity=gravity)))
    assert result.shape == (30, 30, 3)
    assert_mostly(result, colour)


def assert_mostly(image: np.ndarray[Any, Any], colour: list[int]) -> None:
    """All of ``colour`` but for the resampling kernel's reach past the boundary: one line."""
    near = np.abs(image - colour).max(axis=2)
    assert (near <= 2).mean() >= 0.96 and near.max() <= 20


def test_cover_gravity_north_and_south_on_a_portrait() -> None:
    top_bottom = np.zeros((120, 60, 3), np.int16)
    top_bottom[:60], top_bottom[60:] = [255, 0, 0], [0, 0, 255]
    source = png(top_bottom)
    north = pixels(run(source, Resize(width=30, height=30, fit="cover", gravity="north")))
    south = pixels(run(source, Resize(width=30, height=30, fit="cover", gravity="south")))
    assert_mostly(north, [255, 0, 0])
    assert_mostly(south, [0, 0, 255])


def test_centre_gravity_keeps_both_halves() -> None:
    result = pixels(run(halves([255, 0, 0], [0, 0, 255]), Resize(width=30, height=30, fit="cover")))
    assert result[:, 0].tolist()[0] != result[:, -1].tolist()[0]


def test_smart_gravity_finds_the_detail() -> None:
    """A flat grey 120x60 image with a noisy patch on its right: smart crops to the patch."""
    image = np.full((60, 120, 3), 128, np.int16)
    image[:, 80:] = pixels(encode(photo(40, 60), "png"))
    result = pixels(run(png(image), Resize(width=30, height=30, fit="cover", gravity="smart")))
    assert edge_energy(result) > 5


def test_steps_chain_in_order(source: bytes, original: np.ndarray[Any, Any]) -> None:
    steps = (Crop(left=5, top=5, width=50, height=30), Rotate(angle=90), Flip(direction="vertical"))
    result = pixels(run(source, *steps))  # type: ignore[arg-type]
    assert np.array_equal(result, np.flip(np.rot90(original[5:35, 5:55], -1), 0))


def test_a_crop_outside_the_image_at_its_step_fails_clearly(source: bytes) -> None:
    with pytest.raises(OutsideImage, match=r"reaches outside the 45x30 image"):
        run(source, Resize(width=45), Crop(width=40, height=40))


def test_grayscale_then_colour_steps_still_work(source: bytes) -> None:
    result = pixels(run(source, Grayscale(), Resize(width=40, height=40, fit="contain")))
    assert result.shape == (40, 40, 3)


DEADLINE_LOOP = """
import sys
sys.path.insert(0, sys.argv[1])
from images import encode, flat, photo
from imgstream import imaging
from imgstream.operations import Flip, JobSpec, Limits, Resize, Rotate, Trim
imaging.configure(concurrency=1, cache_max_mem_mb=0)
flat_png, photo_jpeg = encode(flat(300, 150, [220, 30, 40]), "png"), encode(photo(400, 300), "jpeg")
cases = [(flat_png, (Trim(),)), (photo_jpeg, (Rotate(angle=90), Flip(direction="vertical"))),
         (photo_jpeg, (Resize(width=100),))]
for _ in range(30):
    for data, steps in cases:
        for output in ({"format": "png"}, {"format": "webp", "max_bytes": 5000}):
            spec = JobSpec(operations=steps, **output)
            imaging.render(data, spec, Limits(), timeout=60, small_copy=True)
print("survived")
"""


def test_renders_under_a_deadline_never_call_back_into_freed_images() -> None:
    """Images held in memory report progress through the image they were copied from; a
    render under a deadline keeps those alive (once, freed, they crashed the process)."""
    completed = subprocess.run(
        [sys.executable, "-c", DEADLINE_LOOP, str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (completed.returncode, completed.stdout.strip()) == (0, "survived"), completed.stderr
