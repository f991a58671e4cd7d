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

Job = Callable[[Path], bytes]


def imaging_job(op: str, is_jpeg: bool) -> Job:
    from imgstream import imaging
    from imgstream.operations import Blur, Grayscale, JobSpec, Limits, Resize

    imaging.configure(concurrency=1, cache_max_mem_mb=0)
    step = {"resize": Resize(width=WIDTH), "grayscale": Grayscale(), "blur": Blur(sigma=SIGMA)}
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
        else:
            image = pyvips.Image.new_from_file(str(path), access="sequential")
            image = image.colourspace("b-w") if op == "grayscale" else image.gaussblur(SIGMA)
        data: bytes = image.write_to_buffer(suffix, **options)
        return data

    return run


def pillow_job(op: str, is_jpeg: bool) -> Job:
    import io

    from PIL import Image, ImageFilter

    save: dict[str, Any] = (
        {"format": "JPEG", "quality": 85} if is_jpeg else {"format": "PNG", "compress_level": 6}
    )

    def run(path: Path) -> bytes:
        with Image.open(path) as image:
            if op == "resize":
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


def opencv_job(op: str, is_jpeg: bool) -> Job:
    import cv2

    cv2.setNumThreads(1)
    cv2.ocl.setUseOpenCL(False)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if is_jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    suffix = ".jpg" if is_jpeg else ".png"
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2}
    reduced |= {4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}

    def run(path: Path) -> bytes:
        if op == "resize":
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
