"""``imgstream submit``: upload images, follow their jobs, save the results.

On a terminal a bar shows the upload, then the job until it ends; several files go as one
batch (``POST /api/batches``) under one bar that fills as their jobs end. Elsewhere (a pipe,
a log) the same events are plain lines. Progress goes to stderr; the results, one line per
file with its sizes and its link, go to stdout. A ``429`` is waited out as ``Retry-After``
says.
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
    zip_path: Path | None = None,
) -> int:
    """Upload, follow and save every file; 0 when every job ended ``done``.

    Several files go as one batch (one request, one bar), or as several when they are more
    than one batch may hold, and with ``zip_path`` (which makes even one file a batch) the
    batch's results are saved as one ZIP too. With
    ``idempotency_key`` (sent with the one request), a rerun after a lost answer finds the
    jobs it made instead of making new ones.
    """
    if len(files) > 1 or zip_path is not None:
        if output is not None and len(files) > 1:
            output.mkdir(parents=True, exist_ok=True)
        with _progress(err) as progress:
            uploads = _submit_batches(
                client, progress, files, fields, output, zip_path, timeout, idempotency_key
            )
    else:
        with _progress(err) as progress:
            (path,) = files
            size = path.stat().st_size
            task = progress.add_task(escape(path.name), total=size + 1, state="waiting")
            uploads = [_Upload(path, size, task)]
            _send(client, progress, uploads[0], fields, idempotency_key)
            _follow(client, progress, [u for u in uploads if u.job], output, timeout)
    for upload in uploads:
        out.print(_summary(client, upload), highlight=False, soft_wrap=True)
    return 0 if all(u.job and u.job["status"] == "done" for u in uploads) else 1


def _progress(err: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        console=err,
        disable=not err.is_terminal,  # elsewhere the events are printed as lines, no bars
    )


def batches_of(sizes: Sequence[int], max_files: int, max_bytes: int) -> list[range]:
    """The files (by their ``sizes``) split into consecutive groups that each fit one batch:
    at most ``max_files`` images and ``max_bytes`` together. A file larger than ``max_bytes``
    on its own still gets a group, for the server to refuse by name."""
    groups: list[range] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_files or total + size > max_bytes):
            groups.append(range(start, index))
            start, total = index, 0
        total += size
    if sizes:
        groups.append(range(start, len(sizes)))
    return groups


def _submit_batches(
    client: Client,
    progress: Progress,
    files: Sequence[Path],
    fields: Mapping[str, str],
    output: Path | None,
    zip_path: Path | None,
    timeout: float,
    idempotency_key: str | None,
) -> list[_Upload]:
    """Every file, in as many batches as the server's limits (``GET /api/limits``) need:
    all of them uploaded first, then followed, a bar each. A split batch ``k`` (from 1)
    carries the idempotency key ``<key>/<k>``, so a rerun of the same files makes nothing."""
    sizes = [path.stat().st_size for path in files]
    limits = client.limits()  # a server from before batch limits were published: one batch
    max_files = limits.get("batch_max_files", len(files))
    max_bytes = limits.get("batch_max_bytes", sum(sizes))
    groups = batches_of(sizes, max_files, max_bytes)
    if zip_path is not None and len(groups) > 1:
        raise ClientError(
            f"--zip: {len(files)} files make {len(groups)} batches (at most "
            f"{max_files} images or {decimal(max_bytes)} each), "
            "and a ZIP holds one batch; submit fewer files at a time"
        )
    sent = []
    split = len(groups) > 1
    for number, group in enumerate(groups, start=1):
        key = f"{idempotency_key}/{number}" if split and idempotency_key else idempotency_key
        label = f"images {group.start + 1}-{group.stop} of {len(files)}" if split else None
        sent.append(
            _send_batch(
                client,
                progress,
                [files[i] for i in group],
                [sizes[i] for i in group],
                fields,
                key,
                label or f"{len(files)} images",
            )
        )
    uploads: list[_Upload] = []
    for group_uploads, accepted in sent:
        if accepted is not None:
            _finish_batch(client, progress, group_uploads, accepted, output, zip_path, timeout)
        uploads.extend(group_uploads)
    return uploads


def _send_batch(
    client: Client,
    progress: Progress,
    files: Sequence[Path],
    sizes: Sequence[int],
    fields: Mapping[str, str],
    idempotency_key: str | None,
    label: str,
) -> tuple[list[_Upload], dict[str, Any] | None]:
    """One batch's upload under its bar; its uploads and the server's answer (None when
    refused: each upload then carries the reason)."""
    task = progress.add_task(label, total=sum(sizes) + len(files), state="uploading")
    uploads = [_Upload(path, size, task) for path, size in zip(files, sizes, strict=True)]
    try:
        accepted = client.submit_batch(
            files,
            fields,
            on_progress=lambda sent: progress.update(task, completed=sent),
            idempotency_key=idempotency_key,
        )
    except ClientError as exc:
        for upload in uploads:
            upload.error = str(exc)
        progress.update(task, state=f"[red]refused[/]: {escape(str(exc))}")
        progress.stop_task(task)
        return uploads, None
    for upload, job in zip(uploads, accepted["jobs"], strict=True):
        upload.job = job
        progress.console.print(f"{escape(upload.path.name)}: queued as job {job['id']}")
    progress.console.print(f"{len(uploads)} images: queued as batch {accepted['id']}")
    return uploads, accepted


def _finish_batch(
    client: Client,
    progress: Progress,
    uploads: list[_Upload],
    accepted: dict[str, Any],
    output: Path | None,
    zip_path: Path | None,
    timeout: float,
) -> None:
    """Follow one accepted batch until its jobs end; save the results (and its ZIP)."""
    task = uploads[0].task
    batch = _follow_batch(client, progress, task, accepted, sum(u.size for u in uploads), timeout)
    if batch is None:
        for upload in uploads:
            upload.error = "the batch's status could not be read"
        return
    jobs = {job["id"]: job for job in batch["jobs"]}
    for upload in uploads:
        assert upload.job is not None
        upload.job = jobs.get(upload.job["id"], upload.job)
        if upload.job["status"] in FINAL:
            _settle(client, progress.console, upload, output)
        else:
            upload.error = f"did not finish within {timeout:g} s (--timeout)"
    if zip_path is not None and batch["counts"]["done"]:
        try:
            written = client.download_zip(batch, zip_path)
            progress.console.print(f"saved the results as {escape(str(zip_path))}")
            progress.console.print(f"({decimal(written)}, {batch['counts']['done']} results)")
        except (ClientError, OSError) as exc:
            progress.console.print(f"[red]the ZIP could not be saved[/]: {escape(str(exc))}")


def _follow_batch(
    client: Client,
    progress: Progress,
    task: TaskID,
    batch: dict[str, Any],
    uploaded: int,
    timeout: float,
) -> dict[str, Any] | None:
    """Poll the batch (one request for all its jobs) until every job has ended, or until
    ``timeout``; the batch as last read, or None when it could not be read."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    total = len(batch["jobs"])
    while True:
        try:
            batch = client.batch(batch["id"])
        except ClientError as exc:
            progress.update(task, state=f"[red]lost[/]: {escape(str(exc))}")
            return None
        counts = batch["counts"]
        ended = counts["done"] + counts["failed"] + counts["expired"]
        progress.update(task, completed=uploaded + ended, state=f"{ended} of {total} ended")
        if batch["status"] != "processing":
            colour = {"done": "green", "partial": "yellow"}.get(batch["status"], "red")
            progress.update(
                task,
                state=f"[{colour}]{batch['status']}[/]: {counts['done']} done, "
                f"{counts['failed']} failed",
            )
            return batch
        if time.monotonic() > deadline:
            progress.update(task, state="[yellow]still running[/]")
            return batch
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)


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
    state = _settle(client, progress.console, upload, output)
    if upload.saved is not None:
        progress.update(upload.task, completed=upload.size + 1, state=state)
        return
    progress.update(upload.task, state=state)
    if upload.job is not None and upload.job["status"] == "failed":
        progress.stop_task(upload.task)


def _settle(client: Client, console: Console, upload: _Upload, output: Path | None) -> str:
    """Save an ended job's result (or say why there is none); its state for the bar."""
    job = upload.job
    assert job is not None
    name = escape(upload.path.name)
    if job["status"] == "failed":
        console.print(f"{name}: failed: {escape(str(job['error']))}")
        return f"[red]failed[/]: {escape(str(job['error']))}"
    result = job["result"]
    target = output_path(upload.path, job["id"], result["format"], output)
    try:
        client.download(job, target)
    except (ClientError, OSError) as exc:
        upload.error = f"the result could not be saved: {exc}"
        return f"[red]not saved[/]: {escape(str(exc))}"
    upload.saved = target
    console.print(f"{name}: done, saved {escape(str(target))}")
    return (
        f"[green]done[/] {result['width']}x{result['height']} {result['format']}, "
        f"{decimal(result['bytes'])}"
    )


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
