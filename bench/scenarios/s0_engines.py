"""Engine duel: imaging vs Pillow, OpenCV and bare pyvips, CPU ms per image, one thread each.

Every (library, operation, image) runs in a fresh process of the ``engines`` environment,
so its peak RSS is its own; libraries alternate inside each round. ``imaging`` is
``imgstream.imaging.render`` from this checkout; bare pyvips is the idiomatic call
(``thumbnail``, ``colourspace("b-w")``, ``gaussblur``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import images
from context import RUNNERS, Context, env
from measure import Summary
from report import Table

LIBRARIES = ("imaging", "pyvips", "pillow", "opencv")
OPERATIONS = ("resize", "grayscale", "blur")
TOOLBOX = ("crop", "rotate", "flip", "sharpen", "pixelate", "adjust", "trim")
"""Measured on the 2 MP JPEG only: each library's own idiom (see runners/engine.py)."""
TARGET_RATIO = 1.25
TARGET_PEAK_MIB = 250


def measure(python: Path, library: str, op: str, source: Path, seconds: float) -> dict[str, Any]:
    completed = subprocess.run(
        [str(python), str(RUNNERS / "engine.py"), library, op, str(source), str(seconds)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{library} {op} {source.name}: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Context) -> list[Table]:
    python = ctx.peer("engines")
    if python is None:
        raise RuntimeError("the engines environment could not be installed; see bench.log")
    sources = {
        "2 MP JPEG": images.mp2_jpeg(),
        "12 MP JPEG": images.mp12_jpeg(),
        "2 MP PNG": images.mp2_png(),
    }
    seconds = 0.3
    cpu: dict[tuple[str, str, str], list[float]] = {}
    rss: dict[tuple[str, str, str], list[float]] = {}
    size: dict[tuple[str, str, str], int] = {}
    for round_number in range(ctx.rounds):
        order = LIBRARIES[round_number % 4 :] + LIBRARIES[: round_number % 4]
        for label, source in sources.items():
            for op in OPERATIONS:
                for library in order:
                    found = measure(python, library, op, source, seconds)
                    key = (label, op, library)
                    cpu.setdefault(key, []).append(found["cpu_ms"])
                    rss.setdefault(key, []).append(found["peak_rss_kib"] / 1024)
                    size[key] = found["output_bytes"]

    table = Table(
        key="s0",
        title="Scenario 0: engine duel, CPU ms per image (median of rounds, range), one thread",
        columns=["image", "op", *LIBRARIES, "imaging ÷ fastest", "target ≤ 1.25×"],
    )
    for label in sources:
        for op in OPERATIONS:
            summaries = {lib: Summary.of(cpu[(label, op, lib)]) for lib in LIBRARIES}
            fastest = min(summaries.values(), key=lambda summary: summary.median)
            ratio = summaries["imaging"].median / fastest.median
            table.add(
                label,
                op,
                *(summaries[lib].show() for lib in LIBRARIES),
                f"{ratio:.2f}×",
                "met" if ratio <= TARGET_RATIO else "missed",
            )
    memory = Table(
        key="s0-rss",
        title=(
            "Scenario 0: peak RSS per process, MiB (12 MP JPEG; interpreter and libraries included)"
        ),
        columns=["op", *LIBRARIES],
    )
    for op in OPERATIONS:
        memory.add(op, *(Summary.of(rss[("12 MP JPEG", op, lib)]).show() for lib in LIBRARIES))
    tables = [table, memory, toolbox(ctx, python, sources["2 MP JPEG"], seconds)]
    if not ctx.quick:
        tables.append(hundred_megapixels(python))
    table.data = {
        "cpu_ms": {"|".join(key): Summary.of(values).as_json() for key, values in cpu.items()},
        "peak_rss_mib": {"|".join(key): values for key, values in rss.items()},
        "output_bytes": {"|".join(key): value for key, value in size.items()},
    }
    table.notes.append(
        "Output keeps the input's format: JPEG quality 85, PNG compression 6 "
        "(libvips writes PNG unfiltered, so its PNGs are larger and faster to write)."
    )
    return tables


def toolbox(ctx: Context, python: Path, source: Path, seconds: float) -> Table:
    """The toolbox operations, imaging against each peer's own idiom, on one 2 MP JPEG."""
    cpu: dict[tuple[str, str], list[float]] = {}
    for round_number in range(ctx.rounds):
        order = LIBRARIES[round_number % 4 :] + LIBRARIES[: round_number % 4]
        for op in TOOLBOX:
            for library in order:
                found = measure(python, library, op, source, seconds)
                cpu.setdefault((op, library), []).append(found["cpu_ms"])
    table = Table(
        key="s0-toolbox",
        title="Scenario 0: the toolbox, CPU ms per image (2 MP JPEG, median of rounds, range)",
        columns=["op", *LIBRARIES, "imaging ÷ fastest", "target ≤ 1.25×"],
    )
    for op in TOOLBOX:
        summaries = {lib: Summary.of(cpu[(op, lib)]) for lib in LIBRARIES}
        ratio = summaries["imaging"].median / min(s.median for s in summaries.values())
        table.add(
            op,
            *(summaries[lib].show() for lib in LIBRARIES),
            f"{ratio:.2f}×",
            "met" if ratio <= TARGET_RATIO else "missed",
        )
    table.data = {"|".join(key): Summary.of(values).as_json() for key, values in cpu.items()}
    table.notes.append(
        "Crop 800×600 at (100, 100); rotate 90°; flip horizontal; sharpen sigma 1 (Pillow "
        "UnsharpMask, OpenCV twice the image less its blur); pixelate 16 px; saturation × 1.5 "
        "(Pillow ImageEnhance.Color, OpenCV a blend with grey, bare pyvips LCh chroma); trim "
        "threshold 10. Decode and encode included, JPEG quality 85."
    )
    return table


def hundred_megapixels(python: Path) -> Table:
    """One image per (library, op) at 10000×10000: peak RSS, the number that matters there."""
    source = images.mp100_jpeg()
    table = Table(
        key="s0-100mp",
        title="Scenario 0: peak RSS at 100 MP (10000×10000 JPEG), MiB, one run each",
        columns=["op", *LIBRARIES, f"imaging ≤ {TARGET_PEAK_MIB} MiB"],
    )
    for op in ("resize", "blur"):
        peaks = {
            lib: measure(python, lib, op, source, -1)["peak_rss_kib"] / 1024 for lib in LIBRARIES
        }
        table.add(
            op,
            *(f"{peaks[lib]:,.0f}" for lib in LIBRARIES),
            "met" if peaks["imaging"] <= TARGET_PEAK_MIB else "missed",
        )
        table.data[op] = peaks
    table.notes.append(
        "One cold run per process. Grayscale is left out here: its memory profile is blur's "
        "without the kernel (both decode the whole image)."
    )
    return table
