"""Running one job: read its original, render it, store the result; no Redis, no loop.

``process_job`` is what a worker does with an entry once it holds the lease; its exceptions
say what the worker should do next: ``JobFailure`` ends the job (another attempt would fail
the same way), ``TransientFailure`` is worth another attempt, ``DiskFull`` (no room, or the
store unreachable) is waited out without spending an attempt. The benchmark calls it
directly, as the worker does.
"""

from __future__ import annotations

from pathlib import Path

from imgstream import imaging, placeholder
from imgstream.content import content_key, sha256_of
from imgstream.jobs import Placeholder, ResultInfo
from imgstream.operations import JobSpec, Limits
from imgstream.storage import Storage, StorageUnavailable, is_disk_full


class JobFailure(Exception):
    """A deterministic failure: the job ends ``failed`` with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientFailure(Exception):
    """A failure another attempt may not repeat: storage trouble, the time limit."""


class DiskFull(Exception):
    """The result could not be written for want of space, or the store (an S3 bucket) is
    unreachable: wait, then try again, without spending an attempt."""


def process_job(
    storage: Storage,
    job_id: str,
    spec: JobSpec,
    limits: Limits,
    timeout: float,
    placeholders: bool = True,
    original_sha256: str = "",
    original_name: str = "",
    result_name: str = "",
) -> ResultInfo:
    """Render the job's original (stored as ``original_name``, a shared one, or else under
    the job's id) and store the result (as ``result_name``, its content key when it is to be
    shared, or else under the job's id), with its placeholder and content key (hashing the
    original when ``original_sha256`` is not given); blocking, runs in a worker thread."""
    try:
        source = storage.original_source(original_name or job_id)
    except FileNotFoundError:
        raise JobFailure("original_missing", "the uploaded image is no longer stored") from None
    except StorageUnavailable as exc:  # an outage of the store costs time, not the job
        raise DiskFull(f"the original could not be read: {exc}") from None
    except OSError as exc:
        raise TransientFailure(f"the original could not be read: {exc.strerror}") from None
    if not original_sha256:
        original_sha256 = _digest(source)
    try:
        rendered = imaging.render(source, spec, limits, timeout=timeout, small_copy=placeholders)
    except imaging.ImagingError as exc:
        raise JobFailure(exc.code, str(exc)) from None
    except imaging.RenderTimeout:
        raise TransientFailure(
            f"the job ran longer than {timeout:g} s (IMGSTREAM_JOB_TIMEOUT)"
        ) from None
    except OSError as exc:
        raise TransientFailure(f"the original could not be read: {exc.strerror}") from None
    try:
        storage.save_result(result_name or job_id, rendered.data, rendered.format.extension)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(
                f"the result could not be stored, the disk is full: {exc.strerror}"
            ) from None
        if isinstance(exc, StorageUnavailable):
            raise DiskFull(f"the result could not be stored: {exc}") from None
        raise TransientFailure(f"the result could not be stored: {exc.strerror}") from None
    return ResultInfo(
        width=rendered.width,
        height=rendered.height,
        format=rendered.format.value,
        bytes=len(rendered.data),
        placeholder=_placeholder(rendered) if placeholders else None,
        content_key=content_key(original_sha256, spec),
        name=result_name,
    )


def _digest(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return sha256_of(source)
    try:
        with source.open("rb") as file:
            return sha256_of(file)
    except OSError as exc:
        raise TransientFailure(f"the original could not be read: {exc.strerror}") from None


def _placeholder(rendered: imaging.Rendered) -> Placeholder | None:
    """From the small copy taken before encoding, or else from the encoded result."""
    if rendered.small is not None:
        return placeholder.of_pixels(*rendered.small)
    return placeholder.of_image(rendered.data)
