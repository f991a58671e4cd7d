"""What every scenario gets: the run's options, scratch space, peers, private Redis servers."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imgstream.config import Settings
from imgstream.redis_server import RedisServer
from imgstream.setting_values import AppendFsync

import peers

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RUNNERS = BENCH / "runners"
_WORKER_DEFAULTS = Settings.model_fields


@dataclass
class Context:
    quick: bool
    rounds: int
    scratch: Path
    log: Path
    _peers: dict[str, Path | Exception] = field(default_factory=dict)

    def count(self, full: int, quick: int) -> int:
        """A workload size: ``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def peer(self, name: str) -> Path | None:
        """The interpreter of peer ``name``'s environment, None if it could not be installed."""
        if name not in self._peers:
            self._peers.update(peers.ensure_all([name], self.log))
        found = self._peers[name]
        return found if isinstance(found, Path) else None

    def install_peers(self, names: list[str]) -> dict[str, Path | Exception]:
        missing = [name for name in names if name not in self._peers]
        if missing:
            self._peers.update(peers.ensure_all(missing, self.log))
        return {name: self._peers[name] for name in names}

    def directory(self, name: str) -> Path:
        """A fresh scratch directory for one part of a scenario."""
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    @contextmanager
    def redis(self, name: str) -> Iterator[RedisServer]:
        """A private redis-server, configured as ``imgstream up`` runs it (AOF, fsync everysec)."""
        server = RedisServer(self.directory(f"redis-{name}"), appendfsync=AppendFsync.EVERYSEC)
        with server:
            yield server


def env(**extra: str) -> dict[str, str]:
    """The environment for every child: libvips as a worker has it, bench modules importable."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_")}
    base.update(
        {
            "PYTHONPATH": f"{BENCH}{os.pathsep}{ROOT / 'src'}",
            # libvips as imgstream's workers have it by default, for imgstream and the rest
            "IMGSTREAM_VIPS_CONCURRENCY": str(_WORKER_DEFAULTS["vips_concurrency"].default),
            "IMGSTREAM_VIPS_CACHE_MB": str(_WORKER_DEFAULTS["vips_cache_mb"].default),
            "VIPS_CONCURRENCY": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return base


def main_python() -> str:
    return sys.executable


def make_scratch() -> Path:
    root = BENCH / ".cache"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))
