"""CPU per tiny render, the in-memory path (``imgstream.tiny``) against the libvips path.

``python bench/runners/tiny_render.py [RENDERS] [ROUNDS] [SIDE...]``: in one process, for a
SIDE x SIDE photo-like PNG (default 64) turned grey, ``imaging.render`` as the worker calls it
(from the file, with its time limit and the placeholder's small copy), RENDERS times per
figure (400), the two paths alternated ROUNDS times (3), ``time.process_time``. The libvips
path is the same code with ``max_tiny_pixels=0``. Prints one markdown row per side.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for images

from imgstream import imaging
from imgstream.operations import Grayscale, JobSpec, Limits

import images

PATHS = {"libvips": Limits(max_tiny_pixels=0), "in memory": Limits(max_tiny_pixels=1_000_000)}


def per_render(path: Path, spec: JobSpec, limits: Limits, renders: int) -> float:
    """CPU ms per render, after one untimed render."""
    imaging.render(path, spec, limits, timeout=60, small_copy=True)
    started = time.process_time()
    for _ in range(renders):
        imaging.render(path, spec, limits, timeout=60, small_copy=True)
    return (time.process_time() - started) / renders * 1000


def main() -> None:
    renders = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sides = [int(side) for side in sys.argv[3:]] or [64]
    imaging.configure(concurrency=1, cache_max_mem_mb=0)  # the workers' defaults
    spec = JobSpec(operations=(Grayscale(),))
    print("| source | libvips path, ms | in memory, ms | ratio (medians) |")
    print("|---|---|---|---|")
    for side in sides:
        path = images.tiny_png() if side == 64 else images.ensure("side", side, side, "png")
        count = max(20, renders * 64 * 64 // (side * side))
        figures: dict[str, list[float]] = {name: [] for name in PATHS}
        for _ in range(rounds):
            for name, limits in PATHS.items():
                figures[name].append(per_render(path, spec, limits, count))
        old, new = (sorted(figures[name]) for name in PATHS)
        old_median, new_median = old[len(old) // 2], new[len(new) // 2]
        print(
            f"| {side}×{side} PNG → grayscale | {old_median:.2f} ({old[0]:.2f}–{old[-1]:.2f}) "
            f"| {new_median:.2f} ({new[0]:.2f}–{new[-1]:.2f}) | {new_median / old_median:.2f} |"
        )


if __name__ == "__main__":
    main()
