"""imaging: real pixels through libvips, no mocks; images are small so the file runs in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from imgstream.imaging import (
    DecodeError,
    ImagingError,
    LimitExceeded,
    Rendered,
    SourceInfo,
    UnsupportedFormat,
    configure,
    default_output_format,
    probe,
    render,
)
from imgstream.operations import Blur, Fit, Grayscale, JobSpec, Limits, Operation, OutputFormat
from imgstream.operations import Resize as R

import reference
from images import (
    SVG,
    animated_gif,
    cmyk_jpeg,
    decode,
    display_p3,
    encode,
    flat,
    photo,
    png16,
    png_declaring,
    with_alpha,
    with_orientation,
)

LIMITS = Limits()


def run(
    data: bytes | Path,
    *steps: Operation,
    fmt: OutputFormat | None = None,
    limits: Limits = LIMITS,
) -> tuple[Rendered, Any]:
    """Render, then decode the result so tests can look at its pixels."""
    result = render(data, JobSpec(operations=steps, format=fmt), limits)
    return result, decode(result.data)


def band_means(image: Any) -> list[float]:
    return [image.extract_band(band).avg() for band in range(image.bands)]


def roughness(image: Any) -> float:
    """Mean absolute difference between horizontal neighbours: noise and edges, not gradients."""
    width, height = image.width - 1, image.height
    step = image.crop(1, 0, width, height).cast("float") - image.crop(0, 0, width, height)
    return float(step.abs().avg())


@pytest.fixture(scope="module")
def landscape() -> bytes:
    """200x100 PNG."""
    return encode(photo(200, 100), "png")


# --- resize -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "size"),
    [
        (R(width=50, height=50), (50, 25)),  # inside: fits the box, aspect kept
        (R(width=80), (80, 40)),  # one side: the other follows
        (R(height=20), (40, 20)),
        (R(width=50, height=50, fit=Fit.COVER), (50, 50)),  # fills the box, cropped
        (R(width=30, height=90, fit=Fit.FILL), (30, 90)),  # stretched
        (R(width=50, fit=Fit.COVER), (50, 25)),  # cover/fill with one side: like inside
        (R(height=25, fit=Fit.FILL), (50, 25)),
    ],
)
def test_resize_sizes(landscape: bytes, step: R, size: tuple[int, int]) -> None:
    result, image = run(landscape, step)
    assert (result.width, result.height) == (image.width, image.height) == size


@pytest.mark.parametrize(
    ("step", "size"),
    [
        (R(width=400), (200, 100)),
        (R(width=400, height=400), (200, 100)),
        (R(width=400, height=50, fit=Fit.COVER), (200, 50)),  # target clamped per axis
        (R(width=300, height=50, fit=Fit.FILL), (200, 50)),
        (R(width=400, enlarge=True), (400, 200)),
        (R(width=400, height=50, fit=Fit.COVER, enlarge=True), (400, 50)),
        (R(width=300, height=50, fit=Fit.FILL, enlarge=True), (300, 50)),
    ],
)
def test_resize_never_upscales_unless_asked(
    landscape: bytes, step: R, size: tuple[int, int]
) -> None:
    result, _ = run(landscape, step)
    assert (result.width, result.height) == size


def test_cover_crops_the_centre() -> None:
    # Black 200x100 with a white band in the middle fifth.
    source = encode(flat(200, 100, [0, 0, 0]).insert(flat(40, 100, [255, 255, 255]), 80, 0), "png")
    _, cover = run(source, R(width=50, height=50, fit=Fit.COVER))
    _, inside = run(source, R(width=50, height=50))
    assert cover.avg() == pytest.approx(255 * 0.4, abs=12)  # 20 of the 50 kept columns are white
    assert inside.avg() == pytest.approx(255 * 0.2, abs=12)


def test_resize_after_another_step_has_the_same_contract(landscape: bytes) -> None:
    result, image = run(landscape, Grayscale(), R(width=50, height=50, fit=Fit.COVER))
    assert (result.width, result.height, image.bands) == (50, 50, 1)
    result, _ = run(landscape, Blur(sigma=1), R(width=400, height=50, fit=Fit.FILL))
    assert (result.width, result.height) == (200, 50)
    result, _ = run(landscape, Blur(sigma=1), R(height=200, enlarge=True))
    assert (result.width, result.height) == (400, 200)


# --- grayscale and blur -------------------------------------------------------------------


def test_grayscale_is_one_band_of_rec601_luma(landscape: bytes) -> None:
    red, green, blue = band_means(decode(landscape))
    result, image = run(landscape, Grayscale())
    assert image.bands == 1
    assert image.interpretation == "b-w"
    assert (result.width, result.height) == (200, 100)
    assert image.avg() == pytest.approx(0.299 * red + 0.587 * green + 0.114 * blue, abs=1.0)


def test_grayscale_keeps_alpha_and_leaves_grey_alone() -> None:
    _, image = run(with_alpha(photo(40, 30), 128), Grayscale())
    assert image.bands == 2
    assert image.extract_band(1).avg() == pytest.approx(128, abs=1)
    grey = encode(photo(40, 30).extract_band(1).copy(interpretation="b-w"), "png")
    _, image = run(grey, Grayscale())
    assert image.bands == 1
    assert image.avg() == pytest.approx(decode(grey).avg(), abs=0.01)


def test_blur_smooths_and_keeps_size(landscape: bytes) -> None:
    result, image = run(landscape, Blur(sigma=3))
    assert (result.width, result.height, image.bands) == (200, 100, 3)
    assert roughness(image) < 0.5 * roughness(decode(landscape))
    assert image.avg() == pytest.approx(decode(landscape).avg(), abs=2)  # same picture, softer


def test_steps_run_in_order(landscape: bytes) -> None:
    result, image = run(landscape, R(width=50), Grayscale(), Blur(sigma=1))
    assert (result.width, result.height, image.bands) == (50, 25, 1)
    assert run(landscape, R(width=50), R(width=100, enlarge=True))[1].width == 100
    assert run(landscape, R(width=100, enlarge=True), R(width=50))[1].width == 50


# --- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_each_output_format_decodes(landscape: bytes, fmt: OutputFormat) -> None:
    result, image = run(landscape, R(width=60), fmt=fmt)
    assert result.format is fmt
    loader = "heif" if fmt is OutputFormat.AVIF else fmt.value
    assert image.get("vips-loader") == f"{loader}load_buffer"
    assert (image.width, image.height, image.format) == (60, 30, "uchar")


def test_tiff_output_is_deflate_compressed() -> None:
    result, image = run(
        encode(flat(400, 300, (90, 90, 90)), "png"), Grayscale(), fmt=OutputFormat.TIFF
    )
    assert (image.width, image.height) == (400, 300)
    assert len(result.data) < 400 * 300 // 20  # uncompressed grey: 120,000 bytes


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("jpeg", OutputFormat.JPEG),
        ("png", OutputFormat.PNG),
        ("webp", OutputFormat.WEBP),
        ("gif", OutputFormat.PNG),
        ("tiff", OutputFormat.PNG),
        ("heif", OutputFormat.PNG),
    ],
)
def test_default_output_format(source: str, expected: OutputFormat) -> None:
    assert default_output_format(source) is expected


@pytest.mark.parametrize(
    ("fmt", "loader", "output"),
    [
        ("jpeg", "jpeg", OutputFormat.JPEG),
        ("png", "png", OutputFormat.PNG),
        ("webp", "webp", OutputFormat.WEBP),
        ("gif", "gif", OutputFormat.PNG),
        ("tiff", "tiff", OutputFormat.PNG),
        ("avif", "heif", OutputFormat.PNG),
    ],
)
def test_probe_and_default_format_per_input(fmt: str, loader: str, output: OutputFormat) -> None:
    data = encode(photo(48, 32), fmt)
    assert probe(data, LIMITS) == SourceInfo(
        format=loader, width=48, height=32, pages=1, has_alpha=False
    )
    result, image = run(data, Blur(sigma=1))
    assert result.format is output
    assert image.get("vips-loader") == f"{output.value}load_buffer"


def test_file_source_works_like_bytes(tmp_path: Path) -> None:
    path = tmp_path / "holiday [1].jpg"  # brackets would be load options for new_from_file
    path.write_bytes(encode(photo(80, 60), "jpeg"))
    assert probe(path, LIMITS) == SourceInfo(
        format="jpeg", width=80, height=60, pages=1, has_alpha=False
    )
    result, _ = run(path, R(width=40))
    assert (result.width, result.height, result.format) == (40, 30, OutputFormat.JPEG)
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.jpg", LIMITS)


# --- orientation and colour ---------------------------------------------------------------


def test_exif_orientation_is_applied_before_resizing() -> None:
    # Stored 60x40, left half black; orientation 6 shows it turned clockwise: 40x60, black on top.
    stored = flat(60, 40, [255, 255, 255]).insert(flat(30, 40, [0, 0, 0]), 0, 0)
    data = with_orientation(stored, 6)
    assert probe(data, LIMITS) == SourceInfo(
        format="jpeg", width=40, height=60, pages=1, has_alpha=False
    )
    result, image = run(data, R(width=20))
    assert (result.width, result.height) == (20, 30)
    assert image.crop(0, 0, 20, 12).avg() < 30
    assert image.crop(0, 18, 20, 12).avg() > 225
    result, image = run(data, Blur(sigma=1))  # the path without a first resize too
    assert (result.width, result.height) == (40, 60)
    assert image.crop(0, 0, 40, 25).avg() < 30
    result, _ = run(data, R(width=30, height=30, fit=Fit.FILL))  # clamped to 40x60, not 60x40
    assert (result.width, result.height) == (30, 30)


@pytest.mark.parametrize("embed_profile", [True, False])
def test_cmyk_becomes_srgb(embed_profile: bool) -> None:
    orange = [200, 60, 30]
    _, image = run(cmyk_jpeg(flat(32, 32, orange), embed_profile=embed_profile), Blur(sigma=1))
    assert (image.bands, image.format, image.interpretation) == (3, "uchar", "srgb")
    for got, want in zip(band_means(image), orange, strict=True):
        assert got == pytest.approx(want, abs=20)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("step", [R(width=16), Blur(sigma=1)], ids=["resize", "blur"])
def test_icc_profiled_rgb_becomes_srgb(fmt: str, step: Operation) -> None:
    red = [220, 40, 30]
    source = display_p3(flat(32, 32, red), fmt)
    assert [round(v) for v in band_means(decode(source))] != red  # P3 numbers in the file
    _, image = run(source, step, fmt=OutputFormat.PNG)
    assert (image.bands, image.interpretation) == (3, "srgb")
    assert not image.get_typeof("icc-profile-data")  # plain sRGB, nothing left to interpret
    for got, want in zip(band_means(image), red, strict=True):
        assert got == pytest.approx(want, abs=3)


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>secret creator</dc:creator>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


@pytest.mark.parametrize("source_format", ["jpeg", "png", "webp"])
def test_metadata_is_stripped(source_format: str) -> None:
    tagged = photo(40, 30).copy()
    tagged.set_type(pyvips.GValue.blob_type, "xmp-data", XMP)
    tagged.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "secret artist")
    source = encode(tagged, source_format)
    assert b"secret" in source
    for output in OutputFormat:
        result, image = run(source, Grayscale(), fmt=output)
        assert b"secret" not in result.data, output
        kept = [name for name in image.get_fields() if name.startswith(("exif", "xmp", "iptc"))]
        assert kept == [], (output, kept)


def test_sixteen_bit_becomes_eight_bit() -> None:
    source = photo(40, 30)
    result, image = run(png16(source), Blur(sigma=0.5))
    assert result.format is OutputFormat.PNG
    assert (image.bands, image.format, image.interpretation) == (3, "uchar", "srgb")
    for got, want in zip(band_means(image), band_means(source), strict=True):
        assert got == pytest.approx(want, abs=1.5)


def test_alpha_is_flattened_on_white_for_jpeg_only() -> None:
    transparent = with_alpha(flat(32, 32, [0, 0, 0]), 0)
    _, image = run(transparent, Blur(sigma=1), fmt=OutputFormat.JPEG)
    assert image.bands == 3
    assert image.avg() >= 250
    half = with_alpha(flat(32, 32, [0, 0, 0]), 128)
    _, image = run(half, R(width=16), fmt=OutputFormat.JPEG)
    assert image.avg() == pytest.approx(127, abs=3)
    _, image = run(half, R(width=16))  # PNG keeps alpha
    assert (image.bands, image.format) == (4, "uchar")
    assert image.extract_band(3).avg() == pytest.approx(128, abs=1)


def test_only_the_first_frame_is_processed() -> None:
    data = animated_gif(5, 30, 20)
    assert probe(data, LIMITS) == SourceInfo(
        format="gif", width=30, height=20, pages=5, has_alpha=True
    )
    result, _ = run(data, Grayscale())
    assert (result.width, result.height, result.format) == (30, 20, OutputFormat.PNG)
    got = reference.pixels(result.data)
    if got.ndim == 3:  # GIF frames carry alpha; these are opaque
        assert (got[..., 1] == 255).all()
        got = got[..., 0]
    distances = [
        reference.mean_difference(got, reference.apply([Grayscale()], frame))
        for frame in reference.frames(data)
    ]
    assert distances[0] < 0.01, distances
    assert min(distances[1:]) > 3, distances  # the frames differ: another one would show


# --- refusals -----------------------------------------------------------------------------


@pytest.fixture
def configured() -> Iterator[None]:
    """configure() is process-wide: put threads and cache back afterwards.

    Untrusted loaders stay blocked, which is what every process of the service wants anyway.
    """
    before = pyvips.concurrency_get(), pyvips.cache_get_max_mem(), pyvips.cache_get_max()
    configure(concurrency=1, cache_max_mem_mb=16)
    assert pyvips.concurrency_get() == 1
    yield
    pyvips.concurrency_set(before[0])
    pyvips.cache_set_max_mem(before[1])
    pyvips.cache_set_max(before[2])


def assert_readable(error: ImagingError, *, not_containing: str = "") -> None:
    assert error.message == str(error)
    assert "\n" not in error.message
    assert "Traceback" not in error.message
    assert "/" not in error.message.replace("HEIF/AVIF", "")
    if not_containing:
        assert not_containing not in error.message


def test_text_named_jpg_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(UnsupportedFormat) as caught:
        probe(path, LIMITS)
    assert caught.value.code == "unsupported_format"
    assert_readable(caught.value, not_containing=str(tmp_path))
    with pytest.raises(UnsupportedFormat):
        render(path, JobSpec(operations=(Grayscale(),)), LIMITS)
    with pytest.raises(UnsupportedFormat):
        probe(b"", LIMITS)


@pytest.mark.usefixtures("configured")
def test_svg_is_refused_by_default() -> None:
    with pytest.raises(UnsupportedFormat):
        probe(SVG, LIMITS)


def test_truncated_jpeg_is_a_decode_error(tmp_path: Path) -> None:
    whole = encode(photo(160, 120), "jpeg")
    with pytest.raises(DecodeError) as caught:
        render(whole[: len(whole) // 2], JobSpec(operations=(R(width=40),)), LIMITS)
    assert caught.value.code == "decode_error"
    assert caught.value.message.startswith("the image could not be decoded: ")
    assert_readable(caught.value)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DecodeError) as caught:
        render(path, JobSpec(operations=(Blur(sigma=1),)), LIMITS)
    assert_readable(caught.value, not_containing=str(tmp_path))


def test_pixel_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(LimitExceeded) as caught:
        probe(png_declaring(30_000, 30_000), LIMITS)
    assert caught.value.code == "limit_exceeded"
    assert "IMGSTREAM_MAX_PIXELS" in caught.value.message
    with pytest.raises(LimitExceeded, match="IMGSTREAM_MAX_PIXELS"):
        render(
            encode(photo(40, 30), "png"),
            JobSpec(operations=(Grayscale(),)),
            Limits(max_pixels=1000),
        )


def test_source_side_above_max_dimension() -> None:
    with pytest.raises(LimitExceeded, match="IMGSTREAM_MAX_DIMENSION"):
        probe(encode(photo(60, 10), "png"), Limits(max_dimension=50))


def test_too_many_frames() -> None:
    with pytest.raises(LimitExceeded, match="IMGSTREAM_MAX_FRAMES"):
        probe(animated_gif(5, 12, 8), Limits(max_frames=3))


@pytest.mark.parametrize(
    ("step", "limits", "setting"),
    [
        (R(height=90, enlarge=True), Limits(max_dimension=100), "IMGSTREAM_MAX_DIMENSION"),
        (R(width=120, enlarge=True), Limits(max_pixels=5000), "IMGSTREAM_MAX_PIXELS"),
    ],
)
def test_result_above_the_limits(step: R, limits: Limits, setting: str) -> None:
    with pytest.raises(LimitExceeded, match=setting):
        render(encode(photo(60, 40), "png"), JobSpec(operations=(Blur(sigma=1), step)), limits)


def test_result_above_what_the_format_can_hold() -> None:
    spec = JobSpec(
        operations=(R(width=16_384, height=4, fit=Fit.FILL, enlarge=True),),
        format=OutputFormat.WEBP,
    )
    with pytest.raises(LimitExceeded, match="WEBP allows at most 16383"):
        render(encode(photo(8, 8), "png"), spec, LIMITS)


def test_untrusted_formats_only_when_the_operator_allows_them() -> None:
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
        b'<rect width="40" height="30" fill="red"/></svg>'
    )
    spec = JobSpec(operations=(Grayscale(),))
    try:
        configure(concurrency=1, cache_max_mem_mb=0, allow_untrusted=True)
        assert probe(svg, Limits()).format == "svg"
        rendered = render(svg, spec, Limits())
        assert (rendered.width, rendered.height, rendered.format) == (40, 30, OutputFormat.PNG)
    finally:
        configure(concurrency=1, cache_max_mem_mb=0)
    with pytest.raises(UnsupportedFormat):
        probe(svg, Limits())


def test_a_one_pixel_strip_jpeg_resizes_without_losing_its_last_row() -> None:
    strip = encode(photo(20000, 1), "jpeg")
    rendered = render(strip, JobSpec(operations=(R(width=200),)), LIMITS)
    assert (rendered.width, rendered.height) == (200, 1)


CRASH_PROBE = """
import gc, sys
sys.path.insert(0, sys.argv[1])
from images import encode, photo
from imgstream import imaging
from imgstream.operations import JobSpec, Limits, parse_operations_json
imaging.configure(concurrency=1, cache_max_mem_mb=0)
source = encode(photo(300, 200), "png")
for operations in ('[{"op":"rotate","angle":0}]', '[{"op":"flip","direction":"vertical"}]'):
    spec = JobSpec(operations=parse_operations_json(operations), max_bytes=20000, format="jpeg")
    for _ in range(50):
        imaging.render(source, spec, Limits(), timeout=60, small_copy=True)
        gc.collect()
"""


def test_a_render_with_a_time_limit_never_aborts_the_process() -> None:
    """A libvips image computed twice (already in memory, then encoded) kept calling a
    deadline check whose Python side was freed: the process aborted. In a child process,
    since an abort would take the test run with it."""
    import subprocess
    import sys

    tests = str(Path(__file__).resolve().parent)
    child = subprocess.run(
        [sys.executable, "-c", CRASH_PROBE, tests],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
