"""The malloc arena bound of API and worker processes (``IMGSTREAM_MALLOC_ARENAS``)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from imgstream.malloc_arenas import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_bound_and_zero_leaves_its_default() -> None:
    code = (
        "from imgstream.malloc_arenas import limit_malloc_arenas as limit\n"
        "print(limit(2), limit(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"]


def test_no_bound_asked_is_no_call() -> None:
    assert limit_malloc_arenas(0) is False
