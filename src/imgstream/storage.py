"""Where originals and results live.

The ``Storage`` protocol is the only way to them: the API, the worker and the janitor never
build a path or a key themselves, so ``LocalStorage`` (a directory) and ``S3Storage`` (a
bucket, ``s3_storage``) are interchangeable. Names are validated job ids, or the 64 hex
digits of a shared file (an original by its SHA-256, a cached result by its content key:
``cache``), never anything a client named; a reader never sees half a file, and a job
written twice still has exactly one result.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from imgstream.jobs import is_stored_name
from imgstream.output import RESULT_EXTENSIONS


class Storage(Protocol):
    def check(self) -> None:
        """Raise ``StorageUnavailable`` saying what is wrong when the store cannot be used."""
        ...

    def save_original(self, job_id: str, source: BinaryIO) -> int: ...
    def draft_original(self) -> BinaryIO: ...
    def commit_original(self, draft: BinaryIO, name: str) -> int: ...
    def has_original(self, name: str) -> bool:
        """Whether an original is stored under ``name`` (a shared one, already uploaded)."""
        ...

    def original_source(self, job_id: str) -> Path | bytes: ...
    def save_result(self, job_id: str, data: bytes, extension: str) -> object: ...
    def find_result(self, job_id: str, extension: str) -> StoredResult | None: ...
    def read_result(self, job_id: str, extension: str) -> Chunks:
        """The result's bytes, whatever ``find_result`` would send a client to (a presigned
        URL included); ``FileNotFoundError`` from the first piece when it is gone."""
        ...

    def delete(self, job_id: str) -> None: ...
    def free_bytes(self) -> int: ...
    def remove_dead_temporaries(self) -> int: ...
    def delete_job_files(self, job_id: str) -> tuple[int, int]: ...
    def scan(self, temporary_age: float, orphan_age: float) -> StorageScan: ...
    def remove_files(self, files: list[StoredFile]) -> tuple[int, int]: ...


class StorageUnavailable(OSError):
    """The store cannot be reached or refuses us (missing bucket, refused credentials, an
    outage): a 503 for a client, an attempt to repeat for a worker. ``str()`` is the message
    an operator acts on."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


READ_CHUNK_BYTES = 1024 * 1024
"""The pieces a local result is read in (``read_result``)."""

Chunks = Iterator[bytes]
"""A result's bytes in pieces (blocking reads: iterate in a worker thread)."""


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A stored result as the API serves it: a local ``path``, or an object read by ``open``
    (a byte range, first and last inclusive, or all of it), or a presigned ``url``."""

    size: int
    path: Path | None = None
    url: str | None = None
    open: Callable[[tuple[int, int] | None], Chunks] | None = None


@dataclass(frozen=True, slots=True)
class StorageUse:
    """Figures the janitor measured on its last sweep (``scanned_at`` is Unix time)."""

    originals: int = 0
    originals_bytes: int = 0
    results: int = 0
    results_bytes: int = 0
    temporary: int = 0
    temporary_bytes: int = 0
    scanned_at: float = 0.0

    def to_hash(self) -> dict[str, float]:
        """The fields of ``{prefix}:storage``, as ``from_hash`` reads them."""
        return {name: getattr(self, name) for name in (*STORAGE_COUNTS, "scanned_at")}

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> StorageUse | None:
        if not fields:
            return None
        try:
            return cls(
                **{name: int(fields.get(name) or 0) for name in STORAGE_COUNTS},
                scanned_at=float(fields.get("scanned_at") or 0),
            )
        except ValueError:
            return None


STORAGE_COUNTS = (
    "originals",
    "originals_bytes",
    "results",
    "results_bytes",
    "temporary",
    "temporary_bytes",
)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``OSError`` numbers that mean "no room": the disk, or the quota, is full."""


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in DISK_FULL_ERRNOS


PROC_FDS = Path("/proc/self/fd")
QUIET_WRITER_SECONDS = 30.0
"""A temporary untouched this long, whose writer is gone, is surely abandoned."""
_TEMPORARY = re.compile(
    r"^\.(?P<target>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)\.[0-9a-f]{32}\.tmp$"
)


def this_host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]


def temporary_for(target: Path) -> Path:
    """Where ``target`` is written before it is renamed into place: the name says who writes
    it (pid and host), so that what a crashed process left can be told from work going on."""
    return target.with_name(f".{target.name}.{os.getpid()}@{this_host()}.{uuid.uuid4().hex}.tmp")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def writer_gone(name: str) -> bool:
    """Whether the temporary ``name`` was written by a process of this host that has exited."""
    match = _TEMPORARY.match(name)
    if match is None or match["host"] != this_host():
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file a ``scan`` found: where (a path, or an object key), ``originals`` or
    ``results``, and its size."""

    name: str
    kind: str
    size: int


@dataclass
class StorageScan:
    """What one pass over the stored files found (and the temporaries it removed)."""

    usage: dict[str, int] = field(default_factory=dict)
    """Files and bytes by ``StorageUse`` field name."""
    old: dict[str, list[StoredFile]] = field(default_factory=dict)
    """Files older than the orphan age, by job id: deleted unless a job hash names them."""
    temporaries_removed: int = 0
    bytes_removed: int = 0


class LocalStorage:
    """Files under one directory: ``originals/<job id>`` and ``results/<job id>.<ext>``.

    The layout is part of the wire format: a producer in another language writes the
    original to ``originals/<job id>`` before adding the stream entry.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.originals = root / "originals"
        self.results = root / "results"
        self.originals.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """Nothing to check: the directories exist once this object does."""

    def save_original(self, job_id: str, source: BinaryIO) -> int:
        """Copy an upload into place, durably, before its job is announced. Returns its size."""
        target = self._original(job_id)
        temporary = temporary_for(target)
        try:
            with temporary.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)
                sink.flush()
                os.fsync(sink.fileno())
                size = sink.tell()
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return size

    def draft_original(self) -> BinaryIO:
        """A file among the originals to write an upload into as it arrives (no copy)."""
        return _Draft(temporary_for(self.originals / "upload"), "w+")

    def commit_original(self, draft: BinaryIO, name: str) -> int:
        """Make ``draft`` (written whole) the original ``name`` as ``save_original`` would."""
        draft.flush()
        os.fsync(draft.fileno())
        Path(draft.name).replace(self._original(name))
        return os.fstat(draft.fileno()).st_size

    def has_original(self, name: str) -> bool:
        return self._original(name).is_file()

    def original_source(self, job_id: str) -> Path:
        path = self._original(job_id)
        if not path.is_file():
            raise FileNotFoundError(f"no original stored for job {job_id}")
        return path

    def save_result(self, job_id: str, data: bytes, extension: str) -> Path:
        target = self._result(job_id, extension)
        temporary = temporary_for(target)
        try:
            temporary.write_bytes(data)
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target

    def free_bytes(self) -> int:
        """Space left for uploads and results (what an unprivileged writer may use)."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def remove_dead_temporaries(self) -> int:
        """Delete temporaries whose writer (a process of this host) is gone and that have
        been quiet a while: what a killed API or worker left. Returns how many."""
        removed = 0
        now = time.time()
        for directory in (self.originals, self.results):
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not is_temporary(entry.name) or not writer_gone(entry.name):
                        continue
                    try:
                        if now - entry.stat(follow_symlinks=False).st_mtime < QUIET_WRITER_SECONDS:
                            continue
                        Path(entry.path).unlink()
                    except FileNotFoundError:
                        continue
                    removed += 1
        return removed

    def find_result(self, job_id: str, extension: str) -> StoredResult | None:
        path = self._result(job_id, extension)
        try:
            return StoredResult(size=path.stat().st_size, path=path)
        except FileNotFoundError:
            return None

    def read_result(self, job_id: str, extension: str) -> Chunks:
        with self._result(job_id, extension).open("rb") as source:
            while piece := source.read(READ_CHUNK_BYTES):
                yield piece

    def delete(self, job_id: str) -> None:
        self._original(job_id).unlink(missing_ok=True)
        for extension in RESULT_EXTENSIONS:
            self._result(job_id, extension).unlink(missing_ok=True)

    def _original(self, job_id: str) -> Path:
        require_name(job_id)
        return self.originals / job_id

    def delete_job_files(self, job_id: str) -> tuple[int, int]:
        """Delete a job's original and results; returns how many files and their bytes."""
        paths = [self._original(job_id)] + [
            self._result(job_id, ext) for ext in sorted(RESULT_EXTENSIONS)
        ]
        return unlink_all(paths)

    def remove_files(self, files: list[StoredFile]) -> tuple[int, int]:
        """Delete files a ``scan`` listed; returns how many still existed and their bytes."""
        return unlink_all([Path(stored.name) for stored in files])

    def scan(self, temporary_age: float, orphan_age: float) -> StorageScan:
        """Count what is stored, delete temporaries abandoned (older than ``temporary_age``,
        or quiet with their writer gone), and list files older than ``orphan_age`` by job."""
        scan = StorageScan(usage=dict.fromkeys(STORAGE_COUNTS, 0))
        now = time.time()
        for kind, directory in (
            ("originals", self.originals),
            ("results", self.results),
        ):
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    age = now - stat.st_mtime
                    if entry.name.startswith("."):
                        if is_temporary(entry.name) and (
                            age > temporary_age
                            or (age > QUIET_WRITER_SECONDS and writer_gone(entry.name))
                        ):
                            removed, size = unlink_all([Path(entry.path)])
                            scan.temporaries_removed += removed
                            scan.bytes_removed += size
                        else:
                            scan.usage["temporary"] += 1
                            scan.usage["temporary_bytes"] += stat.st_size
                        continue
                    job_id = entry.name if kind == "originals" else entry.name.split(".")[0]
                    if not is_stored_name(job_id):
                        continue  # not ours: never touched, never counted
                    scan.usage[kind] += 1
                    scan.usage[f"{kind}_bytes"] += stat.st_size
                    if age > orphan_age:
                        scan.old.setdefault(job_id, []).append(
                            StoredFile(entry.path, kind, stat.st_size)
                        )
        return scan

    def _result(self, job_id: str, extension: str) -> Path:
        require_name(job_id)
        if extension not in RESULT_EXTENSIONS:
            raise ValueError(f"unknown result extension {extension!r}")
        return self.results / f"{job_id}.{extension}"


class _Draft(io.FileIO):
    """An upload's file among the originals: deleted when closed, unless committed."""

    def close(self) -> None:
        super().close()
        Path(str(self.name)).unlink(missing_ok=True)


def require_name(name: str) -> None:
    if not is_stored_name(name):
        raise ValueError("invalid job id or shared file name")


def spooled_source(upload: BinaryIO) -> Path | bytes:
    """An upload as libvips reads it in place: a file of the form's spool, reached by its
    descriptor (written to disk first if it was small), so the image is not loaded into
    memory; its bytes where there is no descriptor (not Linux, or not a file)."""
    try:
        descriptor = upload.fileno()
    except (OSError, io.UnsupportedOperation):
        descriptor = -1
    if descriptor >= 0 and PROC_FDS.is_dir():
        return PROC_FDS / str(descriptor)
    upload.seek(0)
    return upload.read()


def unlink_all(paths: list[Path]) -> tuple[int, int]:
    """Delete the files that exist; returns how many and their bytes."""
    removed = size = 0
    for path in paths:
        try:
            length = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        size += length
    return removed, size
