"""Output options on real bytes: each format decodes as itself (read back by Pillow or by
its signature), quality and max_bytes change the bytes as promised, strip removes what it
says and keeps the picture upright."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image

from imgstream.imaging import TooManyBytes, render
from imgstream.operations import Grayscale, JobSpec, Limits, OutputFormat, Resize, SpecError

from images import encode, photo

LIMITS = Limits()
MODEL, GPS_IFD, ORIENTATION = 0x0110, 0x8825, 0x0112


def run(source: bytes, **options: Any) -> bytes:
    steps = options.pop("steps", (Resize(width=120),))
    return render(source, JobSpec(operations=steps, **options), LIMITS).data


@pytest.fixture(scope="module")
def source() -> bytes:
    return encode(photo(240, 160), "png")


@pytest.mark.parametrize(
    ("fmt", "pillow"), [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("gif", "GIF"),
                        ("tiff", "TIFF"), ("jpg", "JPEG"), ("tif", "TIFF")],
)  # fmt: skip
def test_every_format_decodes_as_itself(source: bytes, fmt: str, pillow: str) -> None:
    with Image.open(io.BytesIO(run(source, format=fmt))) as image:
        assert image.format == pillow and image.size == (120, 80)


def test_avif_is_an_avif(source: bytes) -> None:
    """Pillow reads no AVIF without a plug-in: the ISO-BMFF brand says what it is."""
    data = run(source, format="avif")
    assert data[4:12] == b"ftypavif"
    assert render(data, JobSpec(operations=(Grayscale(),), format="png"), LIMITS).width == 120


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_quality_changes_the_bytes_as_promised(source: bytes, fmt: str) -> None:
    low, default, high = (len(run(source, format=fmt, quality=q)) for q in (20, None, 95))
    assert low < default < high
    output = OutputFormat(fmt)
    assert run(source, format=fmt) == run(source, format=fmt, quality=output.default_quality)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_max_bytes_lowers_the_quality_until_it_fits(source: bytes, fmt: str) -> None:
    full = len(run(source, format=fmt))
    budget = full * 6 // 10
    fitted = run(source, format=fmt, max_bytes=budget)
    assert len(fitted) <= budget
    assert len(fitted) > len(run(source, format=fmt, quality=1))  # the best that fits, not 1
    assert run(source, format=fmt, max_bytes=full) == run(source, format=fmt)


def test_an_unreachable_max_bytes_fails_clearly(source: bytes) -> None:
    with pytest.raises(TooManyBytes, match=r"even at quality 1 the JPEG result is \d+ bytes"):
        run(source, format="jpeg", max_bytes=200)
    with pytest.raises(TooManyBytes, match="even at quality 1 the WEBP result"):
        run(source, format="webp", quality=1, max_bytes=50)  # nothing lower to try
    with pytest.raises(TooManyBytes, match="PNG is lossless"):
        run(source, max_bytes=200)  # PNG in, PNG out
    with pytest.raises(TooManyBytes, match="PNG is lossless"):
        run(source, max_bytes=200, quality=50)  # the quality a lossless output ignores


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"format": "png", "quality": 50}, "quality: png is lossless"),
        ({"format": "gif", "max_bytes": 5000}, "max_bytes: gif is lossless"),
        ({"quality": 0}, "quality: must be at least 1"),
        ({"quality": 101}, "quality: must be at most 100"),
        ({"max_bytes": 0}, "max_bytes: must be at least 1"),
        ({"strip": "maybe"}, "strip: must be true or false"),
        ({"format": "bmp"}, "format: must be one of"),
    ],
)
def test_bad_output_options_are_refused_by_name(options: dict[str, Any], says: str) -> None:
    from imgstream.operations import spec_from_form

    fields = {"operation": "grayscale", **{name: str(value) for name, value in options.items()}}
    with pytest.raises(SpecError) as refused:
        spec_from_form(fields, LIMITS)
    assert str(refused.value).startswith(says), refused.value


def test_a_lossless_output_ignores_the_quality_its_input_format_chose(source: bytes) -> None:
    assert run(source, quality=10) == run(source)  # PNG in, PNG out


def camera_jpeg() -> tuple[bytes, np.ndarray[Any, Any]]:
    """A 60x40 JPEG from a 'camera': model, GPS position, and orientation 6 (shown turned
    90 degrees clockwise). Also returns the stored pixels."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = [220, 30, 30]  # left half red, right half blue, as stored
    stored[:, 30:] = [30, 30, 220]
    exif = Image.Exif()
    exif[MODEL] = "Imaginary Camera X100"
    exif[ORIENTATION] = 6
    exif[GPS_IFD] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0)}
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue(), stored


def test_strip_removes_camera_gps_and_orientation_and_keeps_it_upright() -> None:
    data, stored = camera_jpeg()
    with Image.open(io.BytesIO(data)) as camera:  # the test image is what it claims
        assert camera.getexif()[MODEL] == "Imaginary Camera X100"
        assert camera.getexif().get_ifd(GPS_IFD)[ExifTags.GPS.GPSLatitudeRef] == "N"
    result = run(data, steps=(Grayscale(),), format="jpeg")
    with Image.open(io.BytesIO(result)) as image:
        assert image.size == (40, 60)  # turned upright
        exif = image.getexif()
        assert MODEL not in exif and ORIENTATION not in exif and GPS_IFD not in exif
        assert "exif" not in image.info and "comment" not in image.info
        upright = np.asarray(image.convert("L")).astype(int)
    # clockwise: the stored left (red) half is now on top
    expected = np.rot90(np.asarray(Image.fromarray(stored).convert("L")), -1).astype(int)
    assert np.abs(upright - expected).mean() < 5


def test_strip_false_keeps_the_camera_but_not_the_turn() -> None:
    data, _ = camera_jpeg()
    result = run(data, steps=(Grayscale(),), format="jpeg", strip=False)
    with Image.open(io.BytesIO(result)) as image:
        assert image.size == (40, 60)
        exif = image.getexif()
        assert exif[MODEL] == "Imaginary Camera X100"
        assert exif.get(ORIENTATION, 1) == 1  # already applied: never turned twice
        assert exif.get_ifd(GPS_IFD)[ExifTags.GPS.GPSLatitudeRef] == "N"


def test_strip_converts_an_embedded_profile_to_srgb() -> None:
    """A CMYK JPEG with its profile comes back as sRGB with no profile attached."""
    from images import cmyk_jpeg

    data = cmyk_jpeg(photo(60, 40), embed_profile=True)
    with Image.open(io.BytesIO(run(data, format="png"))) as image:
        assert image.mode == "RGB" and "icc_profile" not in image.info
