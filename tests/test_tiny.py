"""Tiny sources rendered in memory (imgstream.tiny): real images, real decoders, no mocks.

The in-memory path promises the libvips path's result, which ``max_tiny_pixels=0`` forces:
the same decoded pixels, dimensions, format and placeholder copy, byte for byte for every
format libvips still encodes, and for PNG (written with zlib) the same chunks.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
import pyvips

from imgstream import decoding, imaging, tiny, transforms
from imgstream.operations import (
    Blur,
    Crop,
    Direction,
    Flip,
    Grayscale,
    JobSpec,
    Limits,
    Operation,
    OutputFormat,
    Rotate,
)
from imgstream.operations import Resize as R

from images import (
    animated_gif,
    display_p3,
    encode,
    photo,
    png16,
    with_alpha,
    with_orientation,
)

LIMITS = Limits()
VIPS = Limits(max_tiny_pixels=0)
"""The libvips path, for comparison."""

SOURCES = {
    "rgb png": lambda: encode(photo(64, 64), "png"),
    "rgba png": lambda: with_alpha(photo(50, 30), 100),
    "grey png": lambda: encode(photo(40, 24).colourspace("b-w"), "png"),
    "grey+alpha png": lambda: encode(photo(24, 40).colourspace("b-w").bandjoin(200), "png"),
    "jpeg": lambda: encode(photo(64, 48), "jpeg"),
    "webp": lambda: encode(photo(33, 17), "webp"),
    "animated gif": lambda: animated_gif(3, 20, 12),
    "300 dpi png": lambda: encode(photo(30, 20).copy(xres=300 / 25.4, yres=150 / 25.4), "png"),
    "interlaced png": lambda: encode(photo(48, 40), "png", interlace=True),
    "palette png": lambda: encode(photo(48, 40).bandjoin(128), "png", palette=True),
    "1-bit png": lambda: encode(photo(48, 40).colourspace("b-w"), "png", bitdepth=1),
    "tiff": lambda: encode(photo(48, 40), "tiff"),
    "avif": lambda: encode(photo(48, 40), "avif"),
}
PIPELINES: dict[str, tuple[Operation, ...]] = {
    "grayscale": (Grayscale(),),
    "turns and flips": (
        Flip(direction=Direction.VERTICAL),
        Rotate(angle=90),
        Flip(direction=Direction.HORIZONTAL),
        Rotate(angle=-90),
        Rotate(angle=180),
    ),
    "crop, grayscale, turn": (
        Crop(left=3, top=2, width=9, height=7),
        Grayscale(),
        Rotate(angle=270),
    ),
    "no turn": (Rotate(angle=0), Rotate(angle=360)),
}


def pixels(data: bytes) -> Any:
    return pyvips.Image.new_from_buffer(data, "").numpy()


def chunks(png: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order, one IDAT for however many there are."""
    found: list[bytes] = []
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        if kind != b"IDAT" or found[-1:] != [b"IDAT"]:
            found.append(kind)
        if kind == b"pHYs":
            found.append(png[offset + 8 : offset + 8 + length])
        offset += 12 + length
    return found


def plan_of(source: bytes, spec: JobSpec, limits: Limits = LIMITS) -> tiny.Plan | None:
    header = decoding.open_header(source)
    info = decoding.check_source(header, limits)
    output_format = spec.format or imaging.default_output_format(info.format)
    return tiny.plan(header, info, spec, output_format, limits)


@pytest.mark.parametrize(
    ("name", "pipeline"),
    [
        (name, pipeline)
        for name in SOURCES
        for pipeline in PIPELINES
        if (name, pipeline) != ("jpeg", "grayscale")  # the luma path's (tests/test_luma.py)
    ],
)
def test_a_tiny_source_takes_the_in_memory_path_to_the_libvips_result(
    name: str, pipeline: str
) -> None:
    source, steps = SOURCES[name](), PIPELINES[pipeline]
    alpha = decoding.open_header(source).hasalpha()
    for fmt in (None, *OutputFormat):
        spec = JobSpec(operations=steps, format=fmt)
        if (fmt is OutputFormat.JPEG and alpha) or fmt is OutputFormat.GIF:
            assert plan_of(source, spec) is None  # flattened on white; the frames' timing
            continue
        assert plan_of(source, spec) is not None, fmt
        fast = imaging.render(source, spec, LIMITS, timeout=60, small_copy=True)
        slow = imaging.render(source, spec, VIPS, timeout=60, small_copy=True)
        assert (fast.width, fast.height, fast.format) == (slow.width, slow.height, slow.format)
        assert fast.small == slow.small
        assert np.array_equal(pixels(fast.data), pixels(slow.data)), fmt
        if fast.format is OutputFormat.PNG:
            assert chunks(fast.data) == chunks(slow.data)
        else:  # the same libvips saver on the same pixels and header
            assert fast.data == slow.data, fmt


def test_the_in_memory_result_is_what_render_returns() -> None:
    """``render`` went the in-memory way: its bytes are ``tiny.render``'s, not libvips'."""
    source, spec = encode(photo(64, 64), "png"), JobSpec(operations=(Grayscale(),))
    header = decoding.open_header(source)
    info = decoding.check_source(header, LIMITS)
    plan = tiny.plan(header, info, spec, OutputFormat.PNG, LIMITS)
    assert plan == tiny.Plan(width=64, height=64, bands=3, grey=False)
    direct = tiny.render(header, plan, spec, OutputFormat.PNG, LIMITS, small_copy=False)
    rendered = imaging.render(source, spec, LIMITS)
    assert rendered.data == direct.data
    assert rendered.data != imaging.render(source, spec, VIPS).data  # another deflate


def test_the_grayscale_is_libvips_own_on_every_rgb_value() -> None:
    """All 2^24 colours, a million at a time: the float arithmetic is repeated exactly."""
    weights = np.arange(1 << 20, dtype=np.uint32)
    for red in range(0, 256, 16):
        values = weights + (red << 16)
        rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], axis=-1)
        rgb = rgb.astype(np.uint8).reshape(1024, 1024, 3)
        image = pyvips.Image.new_from_memory(rgb.tobytes(), 1024, 1024, 3, "uchar")
        want = transforms.grayscale(image.copy(interpretation="srgb")).numpy()
        assert np.array_equal(tiny.grayscale(rgb)[..., 0], want), red


def test_alpha_is_kept_through_the_grayscale() -> None:
    rgba = np.random.default_rng(3).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    image = pyvips.Image.new_from_memory(rgba.tobytes(), 16, 16, 4, "uchar")
    want = transforms.grayscale(image.copy(interpretation="srgb")).numpy()
    assert np.array_equal(tiny.grayscale(rgba), want)


@pytest.mark.parametrize(
    ("source", "spec", "limits"),
    [
        (encode(photo(257, 256), "png"), JobSpec(operations=(Grayscale(),)), LIMITS),
        (encode(photo(64, 64), "png"), JobSpec(operations=(Grayscale(),)), VIPS),
        (encode(photo(64, 64), "png"), JobSpec(operations=(Grayscale(),), strip=False), LIMITS),
        (encode(photo(64, 64), "png"), JobSpec(operations=(Blur(sigma=1),)), LIMITS),
        (encode(photo(64, 64), "png"), JobSpec(operations=(R(width=32),)), LIMITS),
        (encode(photo(64, 64), "png"), JobSpec(operations=(Rotate(angle=45),)), LIMITS),
        (display_p3(photo(64, 64)), JobSpec(operations=(Grayscale(),)), LIMITS),
        (with_orientation(photo(64, 48), 6), JobSpec(operations=(Grayscale(),)), LIMITS),
        (png16(photo(64, 64)), JobSpec(operations=(Grayscale(),)), LIMITS),
        (encode(photo(64, 64), "jpeg"), JobSpec(operations=(Grayscale(),)), LIMITS),
    ],
    ids=[
        "larger than the bound",
        "bound 0",
        "metadata kept",
        "blur",
        "resize",
        "rotate 45",
        "icc profile",
        "exif orientation",
        "16 bit",
        "jpeg grayscale (luma path)",
    ],
)
def test_other_renders_take_the_libvips_path(source: bytes, spec: JobSpec, limits: Limits) -> None:
    assert plan_of(source, spec, limits) is None


def test_a_crop_outside_the_image_fails_as_on_the_libvips_path() -> None:
    source = encode(photo(20, 10), "png")
    spec = JobSpec(operations=(Rotate(angle=90), Crop(left=5, top=0, width=10, height=5)))
    assert plan_of(source, spec) is not None
    with pytest.raises(imaging.OutsideImage) as fast:
        imaging.render(source, spec, LIMITS)
    with pytest.raises(imaging.OutsideImage) as slow:
        imaging.render(source, spec, VIPS)
    assert str(fast.value) == str(slow.value)


def test_a_truncated_png_fails_as_on_the_libvips_path() -> None:
    source = encode(photo(64, 64), "png")
    truncated = source[: len(source) // 2]
    spec = JobSpec(operations=(Grayscale(),))
    with pytest.raises(imaging.DecodeError) as fast:
        imaging.render(truncated, spec, LIMITS)
    with pytest.raises(imaging.DecodeError) as slow:
        imaging.render(truncated, spec, VIPS)
    assert fast.value.message == slow.value.message


def test_max_bytes_works_as_on_the_libvips_path() -> None:
    """A lossy format's quality search gives the same bytes; a PNG source's PNG result (the
    format followed) over the budget fails with the same words."""
    source = encode(photo(64, 64), "png")
    lossy = JobSpec(operations=(Grayscale(),), format=OutputFormat.WEBP, max_bytes=600)
    fitted = imaging.render(source, lossy, LIMITS).data
    assert len(fitted) <= 600 and fitted == imaging.render(source, lossy, VIPS).data
    lossless = JobSpec(operations=(Grayscale(),), max_bytes=100)
    with pytest.raises(imaging.TooManyBytes) as fast:
        imaging.render(source, lossless, LIMITS)
    with pytest.raises(imaging.TooManyBytes) as slow:
        imaging.render(source, lossless, VIPS)
    assert str(fast.value) == str(slow.value)
