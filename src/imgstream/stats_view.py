"""``imgstream stats``: the dashboard's facts in a terminal, refreshed live, or one JSON snapshot.

It reads Redis directly (``fleet_snapshot``), not the HTTP API, so it works where only Redis is
reachable. ``render`` is a pure function of the ``/api/stats`` JSON, the one shape all
three views share.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.fleet_snapshot import Monitor


def _when(unix: float) -> str:
    if not unix:
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - unreachable


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(stats: dict[str, Any]) -> RenderableType:
    """The terminal view of one ``/api/stats`` document."""
    queue, jobs, speed = stats["queue"], stats["jobs"], stats.get("throughput") or {}
    summary = Table.grid(padding=(0, 3))
    for _ in range(6):
        summary.add_column()
    summary.add_row(
        f"backlog [bold]{queue['backlog']}[/]",
        f"waiting [bold]{queue['waiting']}[/]",
        f"pending [bold]{queue['pending']}[/]",
        f"dead letters [bold]{queue['dead_letters']}[/]",
        f"workers [bold]{stats['live_consumers']}[/]",
        f"jobs/s (1 min) [bold]{speed.get('per_second', 0)}[/]",
    )
    summary.add_row(
        f"submitted {jobs['submitted']}",
        f"done {jobs['done']}",
        f"failed {jobs['failed']}",
        f"failure rate (1 min) {100 * speed.get('failure_rate', 0):.1f} %",
        f"mean end to end {jobs['mean_end_to_end_seconds'] or '-'} s",
        "",
    )

    workers = _table("Workers", ("consumer", "pending", "idle (s)", "last seen (s ago)", "state"))
    for consumer in stats["consumers"]:
        workers.add_row(
            Text(consumer["name"]),
            str(consumer["pending"]),
            _seconds(consumer["idle_seconds"]),
            _seconds(consumer["seen_seconds"]),
            Text("live", "green") if consumer["live"] else Text("not seen", "red"),
        )

    operations = _table(
        "By operation", ("operation", "submitted", "done", "failed", "mean processing (s)")
    )
    for name, row in stats["jobs"]["by_operation"].items():
        mean = row["mean_processing_seconds"]
        operations.add_row(
            Text(name),
            str(row["submitted"]),
            str(row["done"]),
            str(row["failed"]),
            "-" if mean is None else f"{mean:.3f}",
        )

    streams = _table(
        "Streams (partition, lane)", ("partition", "lane", "backlog", "waiting", "pending")
    )
    for figures in stats.get("streams", []):
        streams.add_row(
            str(figures["partition"]), Text(figures["operation"] or "all"),
            str(figures["backlog"]), str(figures["waiting"]), str(figures["pending"]),
        )  # fmt: skip

    failures = _table("Recent failures", ("when", "job", "code", "error"), fold=True)
    for failure in stats["recent_failures"][:10]:
        failures.add_row(
            _when(failure["at"]), Text(failure["job"]), Text(failure["error_code"]),
            Text(failure["error"]),
        )  # fmt: skip

    letters = _table("Dead letters (newest)", ("entry", "job", "deliveries", "reason"), fold=True)
    for letter in stats["dead_letters"][:10]:
        letters.add_row(
            Text(letter["entry_id"]), Text(letter["job_id"]), str(letter["deliveries"]),
            Text(letter["reason"]),
        )  # fmt: skip

    storage = stats.get("storage")
    stored = (
        f"stored: {storage['originals']} originals ({_bytes(storage['originals_bytes'])}), "
        f"{storage['results']} results ({_bytes(storage['results_bytes'])}), "
        f"{storage.get('temporary', 0)} temporary ({_bytes(storage.get('temporary_bytes', 0))}); "
        f"measured {_when(storage['scanned_at'])}"
        if storage
        else "stored: not measured yet (the janitor has not run)"
    )
    heading = Text(f"imgstream at {_when(stats['at'])}", style="bold")
    shown: list[RenderableType] = [heading, summary, workers, operations]
    if len(stats.get("streams", [])) > 1:
        shown.append(streams)
    return Group(*shown, failures, letters, Text(stored))


def show_stats(settings: Settings, *, as_json: bool, interval: float) -> int:
    """Print one JSON snapshot, or refresh the view every ``interval`` s until Ctrl-C."""

    async def run() -> int:
        deployment = Deployment.open(settings, one_shot=True)
        monitor = Monitor.of(deployment)
        try:
            if as_json:
                print(json.dumps((await monitor.snapshot()).to_json(), indent=2))
                return 0
            with Live(console=Console(), auto_refresh=False) as live:
                while True:
                    live.update(render((await monitor.snapshot()).to_json()), refresh=True)
                    await anyio.sleep(max(0.2, interval))
        finally:
            await deployment.aclose()

    try:
        return anyio.run(run)
    except KeyboardInterrupt:
        return 0


def _table(title: str, columns: tuple[str, ...], *, fold: bool = False) -> Table:
    """A titled table of ``columns`` across the terminal; ``fold`` wraps long cells (ids,
    messages) instead of cutting them."""
    table = Table(title=title, title_justify="left", expand=True)
    for column in columns:
        table.add_column(column, overflow="fold" if fold else "ellipsis")
    return table
