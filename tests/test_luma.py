"""A JPEG's grayscale decoded as its luma plane (imgstream.luma): real pixels, real decoders.

The luma path must give libjpeg's own Y plane (as Pillow decodes it with ``draft("L")``),
which is the Rec. 601 luma of the RGB that libvips would have decoded, within rounding; every
JPEG it is not for (turned, CMYK, progressive, corrupt, too large, metadata kept) must come out
byte for byte as libvips' own path makes it, which ``max_luma_pixels=0`` forces.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgstream import imaging
from imgstream.operations import Blur, Fit, Grayscale, JobSpec, Limits, Operation, OutputFormat
from imgstream.operations import Resize as R

import reference
from corpus import find_corpus, load_corpus
from images import cmyk_jpeg, encode, photo, with_orientation

LUMA = Limits()
VIPS = Limits(max_luma_pixels=0)
SOURCE = encode(photo(320, 240), "jpeg", Q=90)
MEAN_TOLERANCE = 0.5
P99_TOLERANCE = 4
"""Grey levels allowed from libvips' RGB-then-luma path, on average and for 99 % of the
pixels: the Y plane is that luma before the RGB is rounded and clipped, which moves it only
where a colour saturates (here 0.12 on average, 3 at the 99th percentile, 12 at most)."""


def png_of(source: bytes | Path, steps: tuple[Operation, ...], limits: Limits) -> bytes:
    return imaging.render(source, JobSpec(operations=steps, format=OutputFormat.PNG), limits).data


def y_plane(jpeg: bytes) -> reference.Pixels:
    with Image.open(io.BytesIO(jpeg)) as image:
        image.draft("L", image.size)  # libjpeg decodes the luma component only
        return np.asarray(image.convert("L")).astype(np.float64)


def close(got: reference.Pixels, want: reference.Pixels, mean: float = MEAN_TOLERANCE) -> bool:
    difference = np.abs(got - want)
    return bool(difference.mean() <= mean and np.percentile(difference, 99) <= P99_TOLERANCE)


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_grayscale_is_the_luma_plane(tmp_path: Path, as_file: bool) -> None:
    source: bytes | Path = SOURCE
    if as_file:
        source = tmp_path / "photo.jpg"
        source.write_bytes(SOURCE)
    got = reference.pixels(png_of(source, (Grayscale(),), LUMA))
    assert got.shape == (240, 320)
    assert np.array_equal(got, y_plane(SOURCE))
    libvips = reference.pixels(png_of(source, (Grayscale(),), VIPS))
    assert not np.array_equal(libvips, got)  # the two paths are told apart by this test
    assert close(got, libvips)
    assert close(got, reference.apply([Grayscale()], reference.pixels(SOURCE)))


@pytest.mark.parametrize(
    "resize",
    [R(width=100), R(width=150, height=150), R(width=80, height=80, fit=Fit.COVER),
     R(width=120, height=60, fit=Fit.FILL), R(width=200, height=200, fit=Fit.CONTAIN),
     R(width=640, enlarge=True)],
    ids=str,
)  # fmt: skip
def test_resize_then_grayscale_matches_libvips(resize: R) -> None:
    steps = (resize, Grayscale(), Blur(sigma=1))
    got = reference.pixels(png_of(SOURCE, steps, LUMA))
    want = reference.pixels(png_of(SOURCE, steps, VIPS))
    assert got.shape == want.shape
    assert close(got, want)


def test_the_plane_is_decoded_smaller_in_the_dct_domain() -> None:
    # 1/4 scale straight from the coefficients: the result is the Y plane's own 1/4 decode,
    # resized no further, as libvips' shrink-on-load would have it.
    got = reference.pixels(png_of(SOURCE, (R(width=80), Grayscale()), LUMA))
    with Image.open(io.BytesIO(SOURCE)) as image:
        image.draft("L", (80, 60))
        assert image.size == (80, 60)
        want = np.asarray(image.convert("L")).astype(np.float64)
    assert got.shape == (60, 80)
    assert close(got, want, mean=0.1)


def progressive() -> bytes:
    data: bytes = photo(64, 48).jpegsave_buffer(interlace=True)
    return data


@pytest.mark.parametrize(
    ("source", "steps", "limits"),
    [
        (with_orientation(photo(64, 48), 6), (Grayscale(),), LUMA),
        (with_orientation(photo(64, 48), 6), (R(width=20), Grayscale()), LUMA),
        (cmyk_jpeg(photo(64, 48), embed_profile=False), (Grayscale(),), LUMA),
        (progressive(), (Grayscale(),), LUMA),
        (SOURCE, (Grayscale(),), Limits(max_luma_pixels=320 * 240 - 1)),
        (SOURCE, (R(width=80), Grayscale()), Limits(max_luma_pixels=80 * 60 - 1)),
        (SOURCE, (Blur(sigma=1), Grayscale()), LUMA),
    ],
    ids=["turned", "turned-resized", "cmyk", "progressive", "too-large", "too-large-shrunk",
         "grayscale-second"],
)  # fmt: skip
def test_other_jpegs_take_libvips_path(
    source: bytes, steps: tuple[Operation, ...], limits: Limits
) -> None:
    assert png_of(source, steps, limits) == png_of(source, steps, VIPS)


def test_metadata_kept_takes_libvips_path() -> None:
    tagged = photo(64, 48).copy()
    tagged.set_type(imaging.pyvips.GValue.gstr_type, "exif-ifd0-Artist", "kept artist")
    source = encode(tagged, "jpeg")
    spec = JobSpec(operations=(Grayscale(),), strip=False)
    kept = imaging.render(source, spec, LUMA).data
    assert b"kept artist" in kept
    assert kept == imaging.render(source, spec, VIPS).data


def test_a_truncated_jpeg_fails_as_before() -> None:
    cut = SOURCE[: len(SOURCE) // 2]
    for steps in [(Grayscale(),), (R(width=80), Grayscale())]:
        with pytest.raises(imaging.DecodeError) as luma:
            png_of(cut, steps, LUMA)
        with pytest.raises(imaging.DecodeError) as libvips:
            png_of(cut, steps, VIPS)
        assert luma.value.message == libvips.value.message


CORPUS = find_corpus()


@pytest.mark.skipif(
    CORPUS is None, reason="the shared real-world corpus is not beside this checkout"
)
def test_every_jpeg_of_the_hostile_corpus_comes_out_as_on_libvips_path() -> None:
    """Malformed and tricky JPEGs: the same outcome either way, images within tolerance."""
    assert CORPUS is not None
    jpegs = [f for f in load_corpus(CORPUS) if f.path.read_bytes()[:3] == b"\xff\xd8\xff"]
    assert len(jpegs) > 20
    for file in jpegs:
        outcomes = []
        for limits in (LUMA, VIPS):
            try:
                outcomes.append(reference.pixels(png_of(file.path, (Grayscale(),), limits)))
            except imaging.ImagingError as error:
                outcomes.append(type(error).__name__)
        luma, libvips = outcomes
        if isinstance(luma, str) or isinstance(libvips, str):
            assert luma == libvips, file.name
        else:
            assert luma.shape == libvips.shape, file.name
            assert np.abs(luma - libvips).mean() <= 1.0, file.name
