"""Placeholders decode, with the formats' own reference decoders (PyPI ``blurhash`` and
``thumbhash-python``), to the image's colours and aspect."""

from __future__ import annotations

import base64
from typing import Any

import blurhash as reference_blurhash
import numpy as np
import pytest
import pyvips
from thumbhash.decode import thumbhash_to_rgba

from imgstream import placeholder
from imgstream.jobs import Placeholder

from images import encode, flat, photo

RED, BLUE = [220, 20, 30], [20, 40, 210]


def of(image: Any, fmt: str = "png") -> Placeholder:
    result = placeholder.of_image(encode(image, fmt))
    assert result is not None
    return result


def blurhash_pixels(text: str, width: int, height: int) -> np.ndarray[Any, Any]:
    return np.array(reference_blurhash.decode(text, width, height), dtype=float)


def thumbhash_pixels(text: str) -> np.ndarray[Any, Any]:
    width, height, rgba = thumbhash_to_rgba(base64.b64decode(text))
    return np.array(rgba, dtype=float).reshape(height, width, 4)


def halves(width: int, height: int) -> Any:
    """Left half red, right half blue."""
    left = flat(width // 2, height, RED)
    return left.join(flat(width - width // 2, height, BLUE), "horizontal")


@pytest.mark.parametrize("colour", [RED, BLUE, [128, 128, 128], [250, 250, 250]])
def test_a_flat_image_decodes_to_its_colour(colour: list[int]) -> None:
    found = of(flat(120, 80, colour))
    assert found.dominant_color == "#" + "".join(f"{value:02x}" for value in colour)
    centre = blurhash_pixels(found.blurhash, 12, 8)[4, 6]
    assert np.abs(centre - colour).max() <= 4
    decoded = thumbhash_pixels(found.thumbhash)
    assert np.abs(decoded[..., :3].mean(axis=(0, 1)) - colour).max() <= 8
    assert (decoded[..., 3] == 255).all()


def test_two_halves_decode_to_their_sides() -> None:
    found = of(halves(160, 80))
    blur = blurhash_pixels(found.blurhash, 32, 16)
    assert np.abs(blur[8, 2] - RED).max() < 60 and np.abs(blur[8, 29] - BLUE).max() < 60
    thumb = thumbhash_pixels(found.thumbhash)
    width = thumb.shape[1]
    assert np.abs(thumb[thumb.shape[0] // 2, 1, :3] - RED).max() < 60
    assert np.abs(thumb[thumb.shape[0] // 2, width - 2, :3] - BLUE).max() < 60


@pytest.mark.parametrize(("width", "height"), [(300, 100), (100, 300), (200, 200), (160, 90)])
def test_thumbhash_keeps_the_aspect_and_blurhash_its_orientation(width: int, height: int) -> None:
    found = of(photo(width, height))
    decoded = thumbhash_pixels(found.thumbhash)
    aspect = decoded.shape[1] / decoded.shape[0]
    # ThumbHash keeps the aspect approximately: in sevenths of the long side, at least 3.
    assert abs(aspect / (width / height) - 1) < 0.35
    assert (aspect > 1, aspect < 1) == (width > height, width < height)
    across, down = reference_blurhash.components(found.blurhash)
    assert (across, down) == ((3, 4) if height > width else (4, 3))


def test_blurhash_equals_the_reference_encoder_on_opaque_images() -> None:
    """The PyPI package's encoder is a port of woltapp's; on the same pixels, same text."""
    small = pyvips.Image.thumbnail_buffer(encode(photo(96, 64), "png"), placeholder.SIDE)
    rgba = bytes(small.bandjoin(255).write_to_memory())
    rows = [
        [list(rgba[4 * (y * small.width + x) : 4 * (y * small.width + x) + 3])
         for x in range(small.width)]
        for y in range(small.height)
    ]  # fmt: skip
    mine = placeholder.blurhash(small.width, small.height, rgba)
    assert mine == reference_blurhash.encode(rows, 4, 3)


def test_transparency_is_in_the_thumbhash() -> None:
    clear = flat(60, 60, [0, 0, 0, 0]).join(flat(60, 60, [*RED, 255]), "horizontal")
    found = of(clear)
    decoded = thumbhash_pixels(found.thumbhash)
    assert decoded[..., 3][:, :3].mean() < 80 and decoded[..., 3][:, -3:].mean() > 180
    assert found.dominant_color == "#dc141e"  # transparent pixels have no colour


def test_jpeg_and_grey_results_have_placeholders() -> None:
    assert of(photo(64, 48), "jpeg").blurhash
    grey = of(flat(50, 50, [90]))
    assert grey.dominant_color == "#5a5a5a"


def test_undecodable_bytes_give_none() -> None:
    assert placeholder.of_image(b"not an image") is None


def test_a_small_result_is_copied_before_encoding_a_large_one_decoded_again() -> None:
    """Either way the placeholder shows the result: the same colour, from pixels or bytes."""
    from imgstream.imaging import SMALL_COPY_PIXELS, render
    from imgstream.operations import Grayscale, JobSpec, Limits

    spec = JobSpec(operations=(Grayscale(),), format="jpeg")
    small = render(encode(halves(160, 80), "png"), spec, Limits(), small_copy=True)
    assert small.small is not None
    width, height, rgba = small.small
    assert (width, height, len(rgba)) == (32, 16, 32 * 16 * 4)
    from_pixels = placeholder.of_pixels(width, height, rgba)
    from_bytes = of_bytes(small.data)
    for found in (from_pixels, from_bytes):
        left, right = blurhash_pixels(found.blurhash, 32, 16)[8, [2, 29]]
        assert left[0] > right[0] + 20  # the red half is the lighter grey
    side = int(SMALL_COPY_PIXELS**0.5) + 1
    large = render(encode(flat(side, side, [9, 9, 9]), "png"), spec, Limits(), small_copy=True)
    assert large.small is None


def of_bytes(data: bytes) -> Placeholder:
    found = placeholder.of_image(data)
    assert found is not None
    return found


@pytest.mark.parametrize(("width", "height"), [(64, 64), (100, 30), (33, 90)])
def test_the_small_copy_keeps_the_aspect_and_ignores_transparent_pixels_colour(
    width: int, height: int
) -> None:
    """Shrunk by opacity-weighted averages: a transparent pixel's colour never bleeds in."""
    hidden = flat(width // 2, height, [0, 255, 0, 0])  # green, but fully transparent
    image = hidden.join(flat(width - width // 2, height, [*RED, 255]), "horizontal")
    small_width, small_height, rgba = placeholder.rgba_copy(image)
    assert max(small_width, small_height) == min(placeholder.SIDE, max(width, height))
    assert abs(small_width / small_height - width / height) < 0.2 * width / height
    pixels = np.frombuffer(rgba, np.uint8).reshape(small_height, small_width, 4)
    seen = pixels[pixels[..., 3] > 0][:, :3]
    assert np.abs(seen.astype(int) - RED).max() <= 1
    assert (pixels[:, 0, 3] == 0).all() and (pixels[:, -1, 3] == 255).all()


def test_a_grey_copy_is_grey_rgba() -> None:
    width, height, rgba = placeholder.rgba_copy(flat(10, 6, [90]))
    assert (width, height) == (10, 6)
    assert rgba == bytes([90, 90, 90, 255]) * 60


@pytest.mark.parametrize(
    ("height", "width", "bands"),
    [(64, 64, 1), (64, 64, 2), (64, 64, 3), (64, 64, 4), (128, 96, 4), (100, 50, 3), (48, 64, 2)],
)
def test_the_small_copy_is_each_blocks_opacity_weighted_mean(
    height: int, width: int, bands: int
) -> None:
    """Against block means taken one block at a time: equal blocks (64 px to 32) are summed
    another way than unequal ones, to the same numbers."""
    rng = np.random.default_rng(height * width * bands)
    pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    if bands in (2, 4):
        pixels[..., -1][rng.random((height, width)) < 0.3] = 0
    got_width, got_height, rgba = placeholder.rgba_of(pixels)
    longest = max(width, height)
    across, down = round(width * 32 / longest), round(height * 32 / longest)
    assert (got_width, got_height) == (across, down)
    got = np.frombuffer(rgba, np.uint8).reshape(down, across, 4)
    colour = pixels[..., :3] if bands >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    weight = pixels[..., -1] if bands in (2, 4) else np.full((height, width), 255, np.uint8)
    for row in range(down):
        for column in range(across):
            block = np.s_[
                row * height // down : (row + 1) * height // down,
                column * width // across : (column + 1) * width // across,
            ]
            opacity = weight[block].astype(float)
            mean = (colour[block] * opacity[..., None]).sum(axis=(0, 1)) / max(opacity.sum(), 1)
            want = [*np.rint(mean), np.rint(opacity.mean())]
            assert list(got[row, column]) == want, (row, column)
