"""Measure a real worker's peak memory on one job: the figures behind docs/security.md's ceiling.

A job is enqueued as docs/wire-format.md describes (original stored, one ``XADD``), then
``imgstream worker --burst`` runs it in a fresh process, whose peak resident set the kernel
keeps (``VmHWM``): Python, the Redis client and libvips together.

The sources are the worst cases at the default ``IMGSTREAM_MAX_PIXELS`` (50 Mpx), because some
layouts must be decoded whole before the first row comes out: an EXIF-rotated progressive JPEG,
and an interlaced 16-bit RGBA PNG (8 bytes per pixel). Run ``python tests/worker_memory.py`` for
the full table in docs/security.md (more formats, blur sigma 100, WebP output: several minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips
import redis

from service import service_env

WIDTH, HEIGHT = 8660, 5773  # 49,994,180 pixels: just under the 50 Mpx default
OPERATIONS = {
    "resize": '[{"op":"resize","width":800}]',
    "grayscale": '[{"op":"grayscale"}]',
    "blur": '[{"op":"blur","sigma":2}]',
}


@dataclass(frozen=True, slots=True)
class Measurement:
    peak_mb: float
    seconds: float
    job: dict[str, str]


def worst_case_sources(directory: Path) -> dict[str, Path]:
    """The 50 Mpx worst cases for JPEG and PNG sources (flat colour: decoding costs the same)."""
    colour = _flat()
    turned = colour.copy()
    turned.set_type(pyvips.GValue.gint_type, "orientation", 6)
    jpeg = directory / "50mpx-progressive-rotated.jpg"
    turned.write_to_file(str(jpeg), Q=85, interlace=True)
    wide = (colour.bandjoin(200).cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    png = directory / "50mpx-rgba16-interlaced.png"
    wide.write_to_file(str(png), compression=1, interlace=True)
    return {"jpeg": jpeg, "png": png}


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM``): the kernel keeps the maximum, so
    sampling misses nothing but the last moments before exit. (``wait4``'s ``ru_maxrss``
    would not do: after ``exec`` it still counts the forking parent's size, here pytest's.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0  # a zombie: no memory left to report


def _flat() -> Any:
    blank = pyvips.Image.black(WIDTH, HEIGHT)
    return blank.new_from_image([40, 120, 200]).copy(interpretation="srgb")


def measure(
    redis_url: str,
    data_dir: Path,
    source: Path,
    operations: str,
    fmt: str = "",
    timeout: float = 300,
) -> Measurement:
    """Run one job on ``source`` in a fresh burst worker; its peak RSS, time and outcome."""
    prefix = f"mem-{uuid.uuid4().hex[:8]}"
    job_id = uuid.uuid4().hex
    (data_dir / "originals").mkdir(parents=True, exist_ok=True)
    os.link(source, data_dir / "originals" / job_id)  # same file system: no 25 MB copy
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entry = {"job": job_id, "operations": operations, **({"format": fmt} if fmt else {})}
    client.xadd(f"{{{prefix}}}:jobs", entry)  # type: ignore[arg-type]
    # One attempt, however loaded the machine: a job past its time limit would be retried in
    # the same process, whose high-water mark would then hold two attempts, not one job.
    env = service_env(redis_url, data_dir, prefix, IMGSTREAM_JOB_TIMEOUT=str(timeout * 10))
    started = time.monotonic()
    with (data_dir / f"worker-{prefix}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imgstream", "worker", "--burst"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    peak_kb = 0
    deadline = started + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
        peak_kb = max(peak_kb, _high_water_kb(process.pid))
        time.sleep(0.005)
    seconds = time.monotonic() - started
    job: dict[str, Any] = client.hgetall(f"{{{prefix}}}:job:{job_id}")  # type: ignore[assignment]
    client.close()
    if process.returncode != 0:
        raise RuntimeError(f"burst worker exited with {process.returncode}")
    return Measurement(peak_mb=peak_kb / 1024, seconds=seconds, job=job)


def _full_table() -> None:  # pragma: no cover - a measuring tool, run by hand
    from imgstream.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        sources = worst_case_sources(root)
        colour = _flat()
        extra = {
            "jpeg-baseline": ("base.jpg", {}),
            "png-8bit": ("rgb8.png", {"compression": 1}),
            "webp-rgba": ("rgba.webp", {"lossless": True}),
            "avif": ("photo.avif", {"effort": 0}),
            "tiff-deflate": ("rgb.tif", {"compression": "deflate"}),
        }
        for name, (filename, options) in extra.items():
            image = colour.bandjoin(200) if name == "webp-rgba" else colour
            image.write_to_file(str(root / filename), **options)
            sources[name] = root / filename
        cases = [(op, operations, "") for op, operations in OPERATIONS.items()]
        cases += [("blur sigma 100", '[{"op":"blur","sigma":100}]', "")]
        cases += [("grayscale to WebP", OPERATIONS["grayscale"], "webp")]
        with RedisServer(root / "redis") as server:
            print("| source | operation | peak RSS (MiB) | seconds | outcome |")
            print("|---|---|---|---|---|")
            for source_name, source in sources.items():
                for label, operations, fmt in cases:
                    result = measure(server.url, root / "data", source, operations, fmt, 600)
                    outcome = result.job.get("status", "?")
                    print(
                        f"| {source_name} | {label} | {result.peak_mb:.0f} | "
                        f"{result.seconds:.1f} | {outcome} |",
                        flush=True,
                    )


if __name__ == "__main__":  # pragma: no cover
    _full_table()
