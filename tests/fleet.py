"""Look at a running worker pool from outside, through /proc: who is alive, how big it got."""

from __future__ import annotations

from pathlib import Path

from imgstream.jobs import is_stored_name

MIB = 1024 * 1024


def worker_pids(supervisor_pid: int) -> set[int]:
    """The worker processes the supervisor has forked (multiprocessing's resource tracker, should
    one run, is skipped); none once the supervisor is gone."""
    pids: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{supervisor_pid}/task").iterdir())
    except OSError:
        return pids
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in command:
                pids.add(int(child))
    return pids


def peak_rss_mb(pid: int) -> float:
    """The most resident memory the process has held so far (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def deaths(log: str) -> list[str]:
    """The supervisor's lines about workers that died and were replaced."""
    return [line for line in log.splitlines() if "restarting in" in line]


def stray_files(root: Path, data_dir: Path, allowed: set[Path]) -> list[str]:
    """Files under ``root`` that the service should not have written.

    Inside ``data_dir`` only ``originals/<name>`` and ``results/<name>.<ext>`` (a job id, or
    a shared file's hash), with no temporary leftovers; outside it, nothing but the paths in
    ``allowed``.
    """
    strays = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path in allowed:
            continue
        relative = path.relative_to(data_dir) if path.is_relative_to(data_dir) else None
        if relative is None or not _stored_file(relative):
            strays.append(str(path))
    return strays


def _stored_file(relative: Path) -> bool:
    parts = relative.parts
    if len(parts) != 2 or parts[1].startswith("."):
        return False
    folder, name = parts
    stem = name.split(".", 1)[0]
    if not is_stored_name(stem):
        return False
    if folder == "originals":
        return name == stem
    return folder == "results" and name.split(".", 1)[1:] in (["jpg"], ["png"], ["webp"])


MEMORY_CEILING_MB = 1536
"""The documented ceiling (docs/security.md): one worker process, any single job within the
default limits. The worst case measured is about 1.1 GiB (tests/worker_memory.py)."""
