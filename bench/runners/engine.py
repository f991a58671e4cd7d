"""One library, one operation, one image, in a fresh process: CPU ms per image and peak RSS.

Runs in the ``engines`` environment: ``python engine.py LIB OP PATH SECONDS`` (a warm-up,
then timed runs until SECONDS of CPU, at least two; SECONDS ≤ 0: one cold run only). Every
library gets one thread and its fastest correct path; the output keeps the input's format
(JPEG quality 85, PNG compression 6). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

WIDTH = 800  # resize target: 800 wide, aspect kept
SIGMA = 2.0
BIG = 10_000_000
# The toolbox operations (every peer has them; each library's own idiom):
BOX = (100, 100, 800, 600)  # crop: left, top, width, height
SHARPEN_SIGMA = 1.0
BLOCK = 16  # pixelate block side
SATURATION = 1.5  # adjust: saturation multiplier
TRIM_THRESHOLD = 10
CLASSIC = ("resize", "grayscale", "blur")
"""The first three operations; any other is a toolbox one (crop, rotate, flip, sharpen,
pixelate, adjust, trim)."""

Job = Callable[[Path], bytes]


def imaging_job(op: str, is_jpeg: bool) -> Job:
    from imgstream import imaging
    from imgstream.operations import (
        Adjust,
        Blur,
        Crop,
        Flip,
        Grayscale,
        JobSpec,
        Limits,
        Operation,
        Pixelate,
        Resize,
        Rotate,
        Sharpen,
        Trim,
    )

    imaging.configure(concurrency=1, cache_max_mem_mb=0)
    left, top, width, height = BOX
    step: dict[str, Operation] = {
        "resize": Resize(width=WIDTH),
        "grayscale": Grayscale(),
        "blur": Blur(sigma=SIGMA),
        "crop": Crop(left=left, top=top, width=width, height=height),
        "rotate": Rotate(angle=90),
        "flip": Flip(direction="horizontal"),
        "sharpen": Sharpen(sigma=SHARPEN_SIGMA),
        "pixelate": Pixelate(size=BLOCK),
        "adjust": Adjust(saturation=SATURATION),
        "trim": Trim(threshold=TRIM_THRESHOLD),
    }
    spec = JobSpec(operations=(step[op],))
    limits = Limits(max_pixels=200_000_000)
    return lambda path: imaging.render(path, spec, limits).data


def pyvips_job(op: str, is_jpeg: bool) -> Job:
    import pyvips

    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    suffix, options = (".jpg", {"Q": 85}) if is_jpeg else (".png", {"compression": 6})

    def run(path: Path) -> bytes:
        if op == "resize":
            image = pyvips.Image.thumbnail(str(path), WIDTH, height=BIG)
        elif op in CLASSIC:
            image = pyvips.Image.new_from_file(str(path), access="sequential")
            image = image.colourspace("b-w") if op == "grayscale" else image.gaussblur(SIGMA)
        else:
            image = _pyvips_toolbox(op, pyvips.Image.new_from_file(str(path)))
        data: bytes = image.write_to_buffer(suffix, **options)
        return data

    return run


def _pyvips_toolbox(op: str, image: Any) -> Any:
    if op == "crop":
        return image.crop(*BOX)
    if op == "rotate":
        return image.rot90()
    if op == "flip":
        return image.fliphor()
    if op == "sharpen":
        return image.sharpen(sigma=SHARPEN_SIGMA)
    if op == "pixelate":
        return image.shrink(BLOCK, BLOCK).zoom(BLOCK, BLOCK)
    if op == "adjust":  # chroma scaled in LCh
        return (image.colourspace("lch") * [1, SATURATION, 1]).colourspace("srgb")
    left, top, width, height = image.find_trim(threshold=TRIM_THRESHOLD)
    return image.crop(left, top, width, height) if width and height else image


def pillow_job(op: str, is_jpeg: bool) -> Job:
    import io

    from PIL import Image, ImageFilter

    save: dict[str, Any] = (
        {"format": "JPEG", "quality": 85} if is_jpeg else {"format": "PNG", "compress_level": 6}
    )

    def run(path: Path) -> bytes:
        with Image.open(path) as image:
            if op not in CLASSIC:
                result = _pillow_toolbox(op, image)
            elif op == "resize":
                height = round(image.height * WIDTH / image.width)
                image.draft("RGB", (WIDTH, height))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                result = image.resize((WIDTH, height), Image.Resampling.LANCZOS)
            elif op == "grayscale":
                if is_jpeg:
                    image.draft("L", image.size)  # libjpeg-turbo decodes straight to luma
                result = image.convert("L")
            else:
                result = image.filter(ImageFilter.GaussianBlur(SIGMA))
            sink = io.BytesIO()
            result.save(sink, **save)
            return sink.getvalue()

    return run


def _pillow_toolbox(op: str, image: Any) -> Any:
    from PIL import Image, ImageChops, ImageEnhance, ImageFilter

    if op == "crop":
        left, top, width, height = BOX
        return image.crop((left, top, left + width, top + height))
    if op == "rotate":
        return image.transpose(Image.Transpose.ROTATE_270)  # 90 degrees clockwise
    if op == "flip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if op == "sharpen":
        return image.filter(ImageFilter.UnsharpMask(radius=SHARPEN_SIGMA, percent=100, threshold=1))
    if op == "pixelate":
        small = image.resize((image.width // BLOCK, image.height // BLOCK), Image.Resampling.BOX)
        return small.resize(image.size, Image.Resampling.NEAREST)
    if op == "adjust":
        return ImageEnhance.Color(image).enhance(SATURATION)
    border = Image.new(image.mode, image.size, image.getpixel((0, 0)))
    difference = ImageChops.difference(image, border)
    difference = ImageChops.add(difference, difference, 2.0, -TRIM_THRESHOLD)  # less the threshold
    box = difference.getbbox()
    return image.crop(box) if box else image


def opencv_job(op: str, is_jpeg: bool) -> Job:
    import cv2

    cv2.setNumThreads(1)
    cv2.ocl.setUseOpenCL(False)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if is_jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    suffix = ".jpg" if is_jpeg else ".png"
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2}
    reduced |= {4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}

    def run(path: Path) -> bytes:
        if op not in CLASSIC:
            image = _opencv_toolbox(op, cv2.imread(str(path), cv2.IMREAD_COLOR))
        elif op == "resize":
            flag = cv2.IMREAD_COLOR
            if is_jpeg:  # the largest JPEG scale-down that stays at least 800 wide
                width = _jpeg_width(path)
                factor = max((f for f in (1, 2, 4, 8) if width // f >= WIDTH), default=1)
                flag = reduced[factor]
            image = cv2.imread(str(path), flag)
            height = round(image.shape[0] * WIDTH / image.shape[1])
            image = cv2.resize(image, (WIDTH, height), interpolation=cv2.INTER_AREA)
        elif op == "grayscale":
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        else:
            image = cv2.GaussianBlur(cv2.imread(str(path), cv2.IMREAD_COLOR), (0, 0), SIGMA)
        ok, buffer = cv2.imencode(suffix, image, params)
        assert ok
        return bytes(buffer)

    return run


def _opencv_toolbox(op: str, image: Any) -> Any:
    import cv2
    import numpy as np

    if op == "crop":
        left, top, width, height = BOX
        return image[top : top + height, left : left + width]
    if op == "rotate":
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if op == "flip":
        return cv2.flip(image, 1)
    if op == "sharpen":  # unsharp mask: twice the image less its blur
        return cv2.addWeighted(image, 2, cv2.GaussianBlur(image, (0, 0), SHARPEN_SIGMA), -1, 0)
    if op == "pixelate":
        rows, columns = image.shape[:2]
        small = cv2.resize(image, (columns // BLOCK, rows // BLOCK), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (columns, rows), interpolation=cv2.INTER_NEAREST)
    if op == "adjust":
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return cv2.addWeighted(image, SATURATION, grey, 1 - SATURATION, 0)
    difference = cv2.absdiff(image, np.full_like(image, image[0, 0])).max(axis=2)
    points = cv2.findNonZero((difference > TRIM_THRESHOLD).astype(np.uint8))
    if points is None:
        return image
    left, top, width, height = cv2.boundingRect(points)
    return image[top : top + height, left : left + width]


def _jpeg_width(path: Path) -> int:
    """The width from a JPEG's SOF marker, without decoding (OpenCV has no header probe)."""
    data = path.read_bytes()[:65536]
    index = 2
    while index < len(data):
        marker, length = data[index + 1], int.from_bytes(data[index + 2 : index + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[index + 7 : index + 9], "big")
        index += 2 + length
    raise ValueError("no SOF marker")


def peak_rss_kib() -> int:
    """This process's peak RSS: ``VmHWM``, which a new program starts afresh. (``ru_maxrss``
    keeps the parent's peak across ``exec`` when the child was forked from a large parent,
    which made every library read the bench driver's 176 MiB.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


LIBRARIES = {"imaging": imaging_job, "pyvips": pyvips_job, "pillow": pillow_job}
LIBRARIES["opencv"] = opencv_job


def main() -> None:
    library, op, source, seconds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    job = LIBRARIES[library](op, source.suffix == ".jpg")
    cpu_times: list[float] = []
    if seconds > 0:
        output = job(source)  # warm-up: imports, codec tables, first allocations
    wall_started = time.perf_counter()
    while True:  # at least two timed runs, more until ``seconds`` of CPU; one if seconds <= 0
        before = time.process_time()  # every thread of this process
        output = job(source)
        cpu_times.append(time.process_time() - before)
        if seconds <= 0 or (len(cpu_times) >= 2 and sum(cpu_times) >= seconds):
            break
        if len(cpu_times) >= 200:
            break
    wall = time.perf_counter() - wall_started
    peak = peak_rss_kib()
    cpu_times.sort()
    result = {
        "library": library,
        "op": op,
        "iterations": len(cpu_times),
        "cpu_ms": 1000 * cpu_times[len(cpu_times) // 2],
        "cpu_ms_mean": 1000 * sum(cpu_times) / len(cpu_times),
        "wall_ms_mean": 1000 * wall / len(cpu_times),
        "peak_rss_kib": peak,
        "output_bytes": len(output),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
