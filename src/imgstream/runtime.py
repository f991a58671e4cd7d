"""What a running ``imgstream up`` leaves in its data directory, for the other commands.

``up`` holds an exclusive lock on ``<data dir>/up.lock`` for its whole life, so a second
``up`` in the same directory refuses at once instead of sharing the private Redis's
append-only file; and it writes ``<data dir>/runtime.json`` (its Redis URL, its API's URL,
its pid), removed on exit, so that ``imgstream stats``, ``dlq``, ``gc``, ``submit`` and
``status`` talk to *that* Redis and API when ``REDIS_URL`` / ``--url`` are not given.

A runtime file counts only while the lock is held: one left behind by a killed ``up`` is
recognised as stale and ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from imgstream.config import Settings
from imgstream.settings_backends import DEFAULT_REDIS_URL

LOCK_NAME = "up.lock"
RUNTIME_NAME = "runtime.json"


class AlreadyRunning(Exception):
    """Another ``imgstream up`` holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"(pid {pid}) " if pid else ""
        super().__init__(
            f"another `imgstream up` {who}is running with the data directory {data_dir}; "
            "stop it first, or give this one its own IMGSTREAM_DATA_DIR"
        )


@dataclass(frozen=True, slots=True)
class Runtime:
    redis_url: str
    api_url: str
    pid: int

    @classmethod
    def from_json(cls, text: str) -> Runtime | None:
        try:
            data = json.loads(text)
            return cls(redis_url=str(data["redis_url"]), api_url=str(data["api_url"]),
                       pid=int(data["pid"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Lock ``data_dir`` for this process's life (until the block ends); ``AlreadyRunning``
    if another process holds it. Nothing is written into the directory when that happens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / LOCK_NAME).open("a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(data_dir, _pid_in(lock)) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield
    finally:
        lock.close()  # closing releases the lock


def _pid_in(lock: IO[str]) -> int | None:
    lock.seek(0)
    try:
        return int(lock.read().strip() or "0") or None
    except ValueError:
        return None


def is_held(data_dir: Path) -> bool:
    """Whether an ``imgstream up`` holds ``data_dir`` now."""
    path = data_dir / LOCK_NAME
    if not path.is_file():
        return False
    with path.open("r") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def write_runtime(data_dir: Path, runtime: Runtime) -> Path:
    path = data_dir / RUNTIME_NAME
    temporary = path.with_name(f".{RUNTIME_NAME}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as sink:  # owner only: REDIS_URL may hold a password
        sink.write(json.dumps(asdict(runtime)) + "\n")
    temporary.replace(path)
    return path


def remove_runtime(data_dir: Path) -> None:
    (data_dir / RUNTIME_NAME).unlink(missing_ok=True)


def read_runtime(data_dir: Path) -> Runtime | None:
    """The runtime of the ``imgstream up`` running with ``data_dir``; None when none runs."""
    try:
        text = (data_dir / RUNTIME_NAME).read_text()
    except OSError:
        return None
    if not is_held(data_dir):
        return None
    return Runtime.from_json(text)


def redacted(url: str) -> str:
    """``url`` fit to print: a password in it is replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def find_redis(settings: Settings) -> tuple[str, str]:
    """The Redis a command should talk to, and why that one (to be said on stderr)."""
    if settings.redis_url:
        return settings.redis_url, "REDIS_URL"
    running = read_runtime(settings.data_dir)
    if running is not None:
        return running.redis_url, _from_up(settings, running)
    return DEFAULT_REDIS_URL, f"the default: REDIS_URL is unset and {_no_up(settings)}"


def find_api(settings: Settings, url: str | None) -> tuple[str, str]:
    """The API a command should talk to, and why that one (to be said on stderr)."""
    if url:
        return url, "--url"
    running = read_runtime(settings.data_dir)
    if running is not None:
        return running.api_url, _from_up(settings, running)
    return f"http://localhost:{settings.port}", f"the default: no --url, and {_no_up(settings)}"


def _from_up(settings: Settings, running: Runtime) -> str:
    return f"the `imgstream up` (pid {running.pid}) running with {settings.data_dir}"


def _no_up(settings: Settings) -> str:
    return f"no `imgstream up` runs with {settings.data_dir} (IMGSTREAM_DATA_DIR)"
