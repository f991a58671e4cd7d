"""Run N worker processes and keep them running.

A worker that dies (a native crash in a decoder, the OOM killer, a bug) is replaced, with a
growing pause if they keep dying, so one bad process never takes the fleet down. SIGTERM or
SIGINT asks every worker to finish its jobs in hand; after the grace period they are killed.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.process
import signal
import sys
import time
from functools import partial
from types import FrameType

import anyio

from imgstream.config import Settings
from imgstream.logs import configure_logging

log = logging.getLogger("imgstream.supervisor")

RESTART_PAUSE_MAX = 30.0
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so nothing is left behind."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def worker_process_main(settings: Settings, burst: bool = False) -> None:
    """Entry point of one worker process; ``burst``: return once the queue is empty."""
    from imgstream.worker import serve  # imported here: the child sets up libvips itself

    die_with_parent()
    configure_logging(settings.log_level)
    anyio.run(partial(serve, settings, burst=burst), backend_options={"use_uvloop": True})


class WorkerPool:
    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._stopping = False
        self._recent_deaths = 0

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        process = self._context.Process(
            target=worker_process_main, args=(self.settings,), name="imgstream-worker"
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
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._processes = [self._spawn() for _ in range(self.concurrency)]
        last_death = 0.0
        while not self._stopping:
            time.sleep(0.2)
            for index, process in enumerate(self._processes):
                if process.is_alive() or self._stopping:
                    continue
                now = time.monotonic()
                self._recent_deaths = self._recent_deaths + 1 if now - last_death < 60 else 1
                last_death = now
                pause = min(RESTART_PAUSE_MAX, 0.1 * 2 ** (self._recent_deaths - 1))
                log.warning(
                    "worker process %s exited with %s; restarting in %.1f s",
                    process.pid,
                    process.exitcode,
                    pause,
                )
                time.sleep(pause)
                if not self._stopping:
                    self._processes[index] = self._spawn()
        return self._shutdown()

    def _shutdown(self) -> int:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()
        deadline = time.monotonic() + self.settings.shutdown_grace + 2
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        status = 0
        for process in self._processes:
            if process.is_alive():
                log.error("worker process %s ignored the grace period; killing it", process.pid)
                process.kill()
                process.join()
                status = 1
        return status
