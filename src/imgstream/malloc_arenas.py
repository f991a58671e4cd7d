"""Fewer glibc malloc arenas per process: the same work in less memory.

glibc gives each thread that contends for the heap an arena of its own, up to eight per
core, and an arena keeps what it once held. libvips' threads, the thread pool the worker
renders in and the API's upload threads each end up with one, holding freed buffers of
decoded images; bounding them to two (``IMGSTREAM_MALLOC_ARENAS``, ``M_ARENA_MAX``) took the
whole deployment's peak PSS in the thumbor duel from ~250 to ~200 MiB, with req/s within the
run-to-run noise (bench/README.md). It must run before threads
are started: arenas made earlier stay. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena bound, from glibc's ``malloc.h``."""


def limit_malloc_arenas(arenas: int) -> bool:
    """Bound this process's malloc arenas to ``arenas`` (0: leave glibc's default); True when
    glibc took the bound."""
    if arenas <= 0:
        return False
    try:  # the symbols already loaded: no ``find_library``, which runs ldconfig in a child
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
