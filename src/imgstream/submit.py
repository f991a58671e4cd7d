"""``imgstream submit``: upload images, follow their jobs, save the results.

On a terminal each file gets a line with a bar (the upload, then the job until it ends) and
its state; elsewhere (a pipe, a log) the same events are plain lines. Progress goes to
stderr; the results, one line per file with its sizes and its link, go to stdout. Files are
uploaded one after the other, a ``429`` waited out as ``Retry-After`` says, and the jobs
followed together.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from imgstream.client import Client, ClientError
from imgstream.output import OutputFormat

FINAL = ("done", "failed")


@dataclass
class _Upload:
    path: Path
    size: int
    task: TaskID
    job: dict[str, Any] | None = None
    error: str | None = None
    saved: Path | None = None


def output_path(source: Path, job_id: str, result_format: str, output: Path | None) -> Path:
    """Where a result is saved: ``output`` itself for one file (unless it is a directory),
    else ``<stem>-<job id prefix>.<ext>`` beside the source or in the ``output`` directory."""
    name = f"{source.stem}-{job_id[:8]}.{OutputFormat(result_format).extension}"
    if output is None:
        return source.with_name(name)
    if output.is_dir():
        return output / name
    return output


def submit_files(
    client: Client,
    files: Sequence[Path],
    fields: Mapping[str, str],
    *,
    output: Path | None,
    timeout: float,
    err: Console,
    out: Console,
    idempotency_key: str | None = None,
) -> int:
    """Upload, follow and save every file; 0 when every job ended ``done``.

    With ``idempotency_key``, file N of several is sent with ``<key>:<N>`` (one file: the
    key itself), so a rerun after a lost answer finds the jobs it made instead of new ones.
    """
    if output is not None and len(files) > 1:
        output.mkdir(parents=True, exist_ok=True)
    progress = Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        console=err,
        disable=not err.is_terminal,  # elsewhere the events are printed as lines, no bars
    )
    with progress:
        uploads = [
            _Upload(path, path.stat().st_size, progress.add_task(
                escape(path.name), total=path.stat().st_size + 1, state="waiting"))
            for path in files
        ]  # fmt: skip
        for number, upload in enumerate(uploads, 1):
            key = idempotency_key
            if key is not None and len(uploads) > 1:
                key = f"{key}:{number}"
            _send(client, progress, upload, fields, key)
        _follow(client, progress, [u for u in uploads if u.job], output, timeout)
    for upload in uploads:
        out.print(_summary(client, upload), highlight=False, soft_wrap=True)
    return 0 if all(u.job and u.job["status"] == "done" for u in uploads) else 1


def _send(
    client: Client,
    progress: Progress,
    upload: _Upload,
    fields: Mapping[str, str],
    idempotency_key: str | None,
) -> None:
    progress.update(upload.task, state="uploading")
    try:
        accepted = client.submit(
            upload.path,
            fields,
            on_progress=lambda sent: progress.update(upload.task, completed=sent),
            idempotency_key=idempotency_key,
        )
    except ClientError as exc:
        upload.error = str(exc)
        progress.update(upload.task, state=f"[red]refused[/]: {escape(str(exc))}")
        progress.stop_task(upload.task)
        return
    upload.job = {"id": accepted["id"], "status": accepted["status"]}
    progress.update(upload.task, completed=upload.size, state=accepted["status"])
    progress.console.print(f"{escape(upload.path.name)}: queued as job {accepted['id']}")


def _follow(
    client: Client,
    progress: Progress,
    uploads: list[_Upload],
    output: Path | None,
    timeout: float,
) -> None:
    """Poll the jobs until each has ended (reads are never rate-limited), saving results."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    waiting = list(uploads)
    while waiting:
        for upload in list(waiting):
            assert upload.job is not None
            try:
                job = client.status(upload.job["id"])
            except ClientError as exc:
                upload.error = str(exc)
                waiting.remove(upload)
                progress.update(upload.task, state=f"[red]lost[/]: {escape(str(exc))}")
                continue
            if job["status"] != upload.job["status"]:
                progress.update(upload.task, state=job["status"])
            upload.job = job
            if job["status"] in FINAL:
                waiting.remove(upload)
                _finish(client, progress, upload, output)
        if waiting and time.monotonic() > deadline:
            for upload in waiting:
                upload.error = f"did not finish within {timeout:g} s (--timeout)"
                progress.update(upload.task, state="[yellow]still running[/]")
            return
        if waiting:
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)


def _finish(client: Client, progress: Progress, upload: _Upload, output: Path | None) -> None:
    job = upload.job
    assert job is not None
    name = escape(upload.path.name)
    if job["status"] == "failed":
        progress.update(upload.task, state=f"[red]failed[/]: {escape(str(job['error']))}")
        progress.console.print(f"{name}: failed: {escape(str(job['error']))}")
        progress.stop_task(upload.task)
        return
    result = job["result"]
    target = output_path(upload.path, job["id"], result["format"], output)
    try:
        client.download(job, target)
    except (ClientError, OSError) as exc:
        upload.error = f"the result could not be saved: {exc}"
        progress.update(upload.task, state=f"[red]not saved[/]: {escape(str(exc))}")
        return
    upload.saved = target
    progress.update(
        upload.task,
        completed=upload.size + 1,
        state=f"[green]done[/] {result['width']}x{result['height']} {result['format']}, "
        f"{decimal(result['bytes'])}",
    )
    progress.console.print(f"{name}: done, saved {escape(str(target))}")


def _summary(client: Client, upload: _Upload) -> str:
    """The line a person (or a script) keeps: what became of the file, sizes, the link."""
    name = escape(str(upload.path))
    job = upload.job
    if upload.saved is not None and job is not None:
        result = job["result"]
        link = str(client.http.base_url.join(result["url"]))
        return (
            f"{name} → {escape(str(upload.saved))}  {result['width']}x{result['height']} "
            f"{result['format']}, {decimal(upload.size)} → {decimal(result['bytes'])}  {link}"
        )
    if job is not None and job["status"] == "failed":
        return f"{name}: failed: {escape(str(job['error']))} (job {job['id']})"
    return f"{name}: {escape(upload.error or 'not done')}"
