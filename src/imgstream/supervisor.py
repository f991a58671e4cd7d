"""Run N worker processes and keep them running.

A worker that dies (a native crash in a decoder, the OOM killer, a bug) is replaced, with a
growing pause if they keep dying, so one bad process never takes the fleet down. SIGTERM or
SIGINT asks every worker to finish its jobs in hand; after the grace period they are killed.

Workers are forked from the supervisor once it has imported everything a worker runs
(libvips and its Python binding included, before any libvips thread exists), so the fleet
shares those pages instead of each process loading its own copy; each worker configures
libvips and connects to Redis itself, after the fork.
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from types import FrameType

import anyio

from imgstream.config import Settings
from imgstream.logs import configure_logging
from imgstream.processes import EXIT_REFUSED, die_with_parent

log = logging.getLogger("imgstream.supervisor")

RESTART_PAUSE_MAX = 30.0
HEALTHY_LIFETIME = 2.0
"""A worker that lived this long before dying is restarted at once; younger deaths back off."""
PRELOADED = ("imgstream.worker_process", "simplejpeg")
"""Imported by the supervisor before it forks: the worker loop, imaging, libvips, redis-py,
and the luma decoder (``imgstream.luma`` loads it on first use)."""


def worker_process_main(settings: Settings, burst: bool = False) -> None:
    """Entry point of one worker process; ``burst``: return once the queue is empty."""
    from imgstream.worker_process import serve  # preloaded by a pool; in burst mode, loaded now

    die_with_parent()
    configure_logging(settings.log_level, settings.log_format)
    anyio.run(partial(serve, settings, burst=burst), backend_options={"use_uvloop": True})


def _forked_worker_main(settings: Settings) -> None:
    """A pool's worker, just forked: the supervisor's signal handlers are not its own."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    worker_process_main(settings)


def preload() -> None:
    """Import what every worker runs, once, in the process that forks them.

    numpy (simplejpeg's) would start OpenBLAS threads at import, and a fork keeps only the
    forking thread; workers never use BLAS, so it gets none. ``gc.freeze`` keeps the
    collector from writing to the preloaded objects, so their pages stay shared.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    for name in PRELOADED:
        importlib.import_module(name)
    gc.freeze()


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess | None
    started: float = field(default_factory=time.monotonic)
    quick_deaths: int = 0
    restart_at: float = 0.0


class WorkerPool:
    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self._context = multiprocessing.get_context("fork")
        self._slots: list[_Slot] = []
        self._stopping = False
        self._refused = False

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        process = self._context.Process(
            target=_forked_worker_main, args=(self.settings,), name="imgstream-worker"
        )
        process.start()
        log.info("started worker process %s", process.pid)
        return process

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: stopping workers", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        """Serve until signalled; returns the exit status for the command."""
        preload()
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._slots = [_Slot(self._spawn()) for _ in range(self.concurrency)]
        while not self._stopping:
            time.sleep(0.1)
            for slot in self._slots:
                if not self._stopping:
                    self._tend(slot)
        status = self._shutdown()
        return EXIT_REFUSED if self._refused else status

    def _tend(self, slot: _Slot) -> None:
        """Replace a dead worker; one that keeps dying young is restarted ever more slowly.
        One that refused to run (``EXIT_REFUSED``: the Redis is unfit) stops the pool."""
        now = time.monotonic()
        if slot.process is not None:
            if slot.process.is_alive():
                if now - slot.started > HEALTHY_LIFETIME:
                    slot.quick_deaths = 0
                return
            if slot.process.exitcode == EXIT_REFUSED:
                log.critical("a worker refused to run (its log says why); stopping")
                self._refused = True
                self._stopping = True
                return
            lived = now - slot.started
            slot.quick_deaths = slot.quick_deaths + 1 if lived < HEALTHY_LIFETIME else 0
            pause = (
                min(RESTART_PAUSE_MAX, 0.25 * 2 ** (slot.quick_deaths - 1))
                if slot.quick_deaths
                else 0.0
            )
            log.warning(
                "worker process %s exited with %s after %.1f s; restarting in %.1f s",
                slot.process.pid,
                slot.process.exitcode,
                lived,
                pause,
            )
            slot.process = None
            slot.restart_at = now + pause
        if now >= slot.restart_at:
            slot.process = self._spawn()
            slot.started = now

    def _shutdown(self) -> int:
        processes = [slot.process for slot in self._slots if slot.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + self.settings.shutdown_grace + 2
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        status = 0
        for process in processes:
            if process.is_alive():
                log.error("worker process %s ignored the grace period; killing it", process.pid)
                process.kill()
                process.join()
                status = 1
        return status
