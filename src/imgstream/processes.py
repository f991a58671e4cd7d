"""Process hygiene shared by everything that starts child processes."""

from __future__ import annotations

import ctypes
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so nothing is left behind."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (Linux ``/proc``); None when that cannot be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])  # the fields after "(comm)": state, ppid
    except (OSError, IndexError, ValueError):
        return None


EXIT_REFUSED = 78
"""A worker's exit status when it will not run against its Redis (EX_CONFIG): restarting it
would not help, so its supervisor stops."""
