"""Results: one markdown table per scenario, printed, and kept as JSON under ``bench/results``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgstream.redis_server import RedisServerError, find_redis_server

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Table:
    """What a scenario reports: a titled markdown table, notes under it, raw data for JSON."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    try:
        redis_version = (
            subprocess.run(
                [find_redis_server(), "--version"], capture_output=True, text=True, check=False
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except (OSError, IndexError, RedisServerError):
        redis_version = "unknown"
    return {
        "redis_server": redis_version,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "commit": commit(),
    }


def commit() -> str:
    """The commit measured, and whether the checkout differed from it (figures of uncommitted
    code cannot be traced back)."""
    root = Path(__file__).resolve().parent.parent

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *arguments], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("log", "-1", "--format=%h %cs %s")
    if not head:
        return "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench")
    return head + (" + uncommitted changes in src/ or bench/" if changed else "")


def describe(info: dict[str, Any]) -> str:
    load = ", ".join(f"{value:.2f}" for value in info["load_average_at_start"])
    return (
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB RAM, "
        f"Linux {info['kernel']}, Python {info['python']}, redis-server "
        f"{info.get('redis_server', 'unknown')}; load average at start {load}"
    )


def save(tables: list[Table], info: dict[str, Any], options: dict[str, Any]) -> Path:
    """Write ``<timestamp>.json`` and ``latest.md`` (``latest-quick.md`` for a quick run,
    ``latest-partial.md`` for some scenarios only, so a partial run never replaces the last
    full one); returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {
        "machine": info,
        "options": options,
        "tables": [
            {
                "key": table.key,
                "title": table.title,
                "columns": table.columns,
                "rows": table.rows,
                "notes": table.notes,
                "data": table.data,
            }
            for table in tables
        ],
    }
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    mode = "quick" if options.get("quick") else "partial" if options.get("partial") else "full"
    header = (
        f"# imgstream benchmark results ({mode} run, {time.strftime('%Y-%m-%d %H:%M')})\n\n"
        f"Commit: {info.get('commit', 'unknown')}.\n"
        f"Machine: {describe(info)}.\n"
        f"Command: `{options.get('command', 'make bench')}`.\n"
    )
    body = "\n".join(table.markdown() for table in tables)
    name = "latest.md" if mode == "full" else f"latest-{mode}.md"
    (RESULTS / name).write_text(header + "\n" + body)
    return path
