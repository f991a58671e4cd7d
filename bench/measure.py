"""Measuring process trees from the outside: CPU time, PSS and RSS; and summary statistics.

CPU comes from ``/proc/PID/stat`` (user + system, including reaped children), because
libvips keeps helper threads and wall time alone would hide them. Memory is the sum of
PSS over a tree (``/proc/PID/smaps_rollup``), so pages that forked workers share are not
counted twice; RSS is kept beside it for comparison with published figures.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(child) for child in text.split())
    except OSError:
        pass
    return found


def tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their live descendants."""
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(children(pid))
    return seen


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its children it has reaped; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14..17.
    return sum(int(value) for value in fields[11:15]) / _TICK


def tree_cpu(roots: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in tree(roots))


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``), to see others' load."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; zeros once it is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def peak_rss_kib(pid: int) -> int:
    """The kernel's own high-water mark of one process's RSS (``VmHWM``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemorySampler:
    """Sums PSS and RSS over the trees of ``roots()`` every ``interval`` seconds; keeps peaks."""

    roots: Callable[[], Sequence[int]]
    interval: float = 0.1
    peak_pss_kib: int = 0
    peak_rss_kib: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        pss = rss = 0
        for pid in tree(self.roots()):
            one_pss, one_rss = memory_kib(pid)
            pss += one_pss
            rss += one_rss
        self.peak_pss_kib = max(self.peak_pss_kib, pss)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@dataclass
class CpuWatch:
    """CPU spent by the trees of some roots between ``start()`` and ``stop()``."""

    roots: Callable[[], Sequence[int]]
    started_cpu: float = 0.0
    started_at: float = 0.0
    cpu: float = 0.0
    wall: float = 0.0

    def start(self) -> None:
        self.started_cpu = tree_cpu(self.roots())
        self.started_at = time.perf_counter()

    def stop(self) -> None:
        self.cpu = tree_cpu(self.roots()) - self.started_cpu
        self.wall = time.perf_counter() - self.started_at


# Statistics.


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, ``p`` in 0..100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Median over rounds with the range, e.g. ``12.3 (11.9–13.0)``."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        clean = [value for value in values if value == value]  # drop NaN
        if not clean:
            nan = float("nan")
            return cls(nan, nan, nan, tuple(values))
        return cls(statistics.median(clean), min(clean), max(clean), tuple(values))

    @property
    def spread(self) -> float:
        """(max − min) / median: 0.1 means the rounds moved by 10 %."""
        return (self.high - self.low) / self.median if self.median else float("nan")

    def show(self, digits: int = 0) -> str:
        if self.median != self.median:
            return "–"
        if len(self.values) == 1:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"

    def as_json(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "spread": self.spread,
            "values": list(self.values),
        }


def ratio(numerator: Summary, denominator: Summary) -> str:
    if not denominator.median or numerator.median != numerator.median:
        return "–"
    return f"{numerator.median / denominator.median:.2f}×"
