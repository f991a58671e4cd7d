"""Deterministic photo-like test images: smooth colour gradients, soft texture and fine noise.

Flat colour would flatter every codec; pure noise would make JPEGs several times larger
than a camera's. The mix here lands near a real photo's 2–4 bits per pixel at quality 85.
Images are generated once per machine into ``bench/.cache/images`` and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyvips

CACHE = Path(__file__).resolve().parent / ".cache" / "images"


def photo(width: int, height: int, seed: int = 7) -> Any:
    """An 8-bit sRGB image, the same for the same arguments."""
    xy = pyvips.Image.xyz(width, height)
    red = xy[0] * (200 / max(width - 1, 1)) + 30
    green = xy[1] * (200 / max(height - 1, 1)) + 30
    blue = 230 - (xy[0] + xy[1]) * (200 / max(width + height - 2, 1))
    base = red.bandjoin([green, blue])
    # Soft blotches (low-frequency texture), then fine grain like sensor noise.
    small_w, small_h = max(width // 64, 2), max(height // 64, 2)
    blotches = pyvips.Image.gaussnoise(small_w, small_h, sigma=40, mean=0, seed=seed + 1)
    blotches = blotches.resize(width / small_w, vscale=height / small_h, kernel="linear")
    blotches = blotches.crop(0, 0, width, height)
    grain = pyvips.Image.gaussnoise(width, height, sigma=5, mean=0, seed=seed)
    image = base + blotches + grain
    return image.cast("uchar").copy(interpretation="srgb")


def ensure(name: str, width: int, height: int, fmt: str) -> Path:
    """The cached file ``name`` (``jpeg`` quality 85 or ``png``), generated if missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if fmt == "jpeg" else ".png"
    path = CACHE / f"{name}-{width}x{height}{suffix}"
    if not path.exists():
        temporary = path.with_name(f".{path.name}.tmp{suffix}")
        options: dict[str, Any] = {"Q": 85} if fmt == "jpeg" else {"compression": 6}
        photo(width, height).write_to_file(str(temporary), **options)
        temporary.replace(path)
    return path


# The images every scenario draws from.
def tiny_png() -> Path:
    return ensure("tiny", 64, 64, "png")


def hd_jpeg() -> Path:
    return ensure("hd", 1920, 1080, "jpeg")


def mp2_jpeg() -> Path:
    return ensure("2mp", 1732, 1155, "jpeg")


def mp2_png() -> Path:
    return ensure("2mp", 1732, 1155, "png")


def mp12_jpeg() -> Path:
    return ensure("12mp", 4240, 2832, "jpeg")


def imgproxy_jpeg() -> Path:
    return ensure("imgproxy", 7360, 4912, "jpeg")


def mp100_jpeg() -> Path:
    return ensure("100mp", 10000, 10000, "jpeg")


ALL = (tiny_png, hd_jpeg, mp2_jpeg, mp2_png, mp12_jpeg, imgproxy_jpeg, mp100_jpeg)

if __name__ == "__main__":
    for make in ALL:
        file = make()
        print(f"{file.name}: {file.stat().st_size / 1e6:.2f} MB")
