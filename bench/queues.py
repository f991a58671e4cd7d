"""Queue systems for scenarios 3 and 6: enqueue N jobs, start workers, watch them drain.

Every system gets a pre-filled queue, then its workers start; the drain rate is measured
between 10 % and 90 % of the jobs done, so start-up and the last stragglers do not count,
and CPU per job is measured over the same window (workers' process trees, and Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from imgstream.connection import connect
from imgstream.jobs import StreamEntry, new_job_id
from imgstream.keys import Keys
from imgstream.queue import JobQueue

from context import BENCH, RUNNERS, env, main_python
from measure import machine_busy, tree_cpu

GROUP = "bench-workers"


@dataclass
class Drain:
    system: str
    jobs: int
    enqueue_rate: float
    enqueue_cpu_us: float
    drain_rate: float
    worker_cpu_ms: float
    redis_cpu_us: float
    other_cores: float
    """Cores busy with anything but these workers, Redis and the bench: the machine's noise."""

    def as_json(self) -> dict[str, float | str | int]:
        return dict(self.__dict__)


@dataclass
class System:
    """One queue under test: how to enqueue and how to start workers. Every system's progress
    is seen the same way, by the results stored (``stored``), which costs none of them."""

    name: str
    enqueue: Callable[[list[str]], tuple[float, float]]
    """Enqueues the ids; returns (seconds, CPU seconds) of the enqueuing process."""
    commands: list[list[str]]
    """One command per worker process group to start."""
    extra_env: dict[str, str] = field(default_factory=dict)


def link_originals(data_dir: Path, source: Path, count: int) -> list[str]:
    originals = data_dir / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    (data_dir / "results").mkdir(exist_ok=True)
    ids = [new_job_id() for _ in range(count)]
    for job_id in ids:
        os.link(source, originals / job_id)
    return ids


def imgstream_system(url: str, prefix: str, operations: str, processes: int) -> System:
    keys = Keys(prefix)

    def enqueue(ids: list[str]) -> tuple[float, float]:
        async def main() -> tuple[float, float]:
            client = connect(url)
            queue = JobQueue(client, keys, "imgstream-workers")
            await queue.ensure_group()
            started, cpu = time.perf_counter(), time.process_time()
            for job_id in ids:
                await queue.enqueue(job_id, StreamEntry(job_id=job_id, operations=operations))
            result = time.perf_counter() - started, time.process_time() - cpu
            await client.aclose()
            return result

        return asyncio.run(main())

    return System(
        name=f"imgstream ({processes} worker processes)",
        enqueue=enqueue,
        commands=[[main_python(), "-m", "imgstream", "worker", "--concurrency", str(processes)]],
        extra_env={"IMGSTREAM_KEY_PREFIX": prefix, "IMGSTREAM_LOG_LEVEL": "WARNING"},
    )


def bare_system(url: str, data_dir: Path, operations: str) -> System:
    stream = "bench:jobs"

    def enqueue(ids: list[str]) -> tuple[float, float]:
        client = redis.Redis.from_url(url)
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        started, cpu = time.perf_counter(), time.process_time()
        for index in range(0, len(ids), 100):
            pipe = client.pipeline(transaction=False)
            for job_id in ids[index : index + 100]:
                pipe.xadd(stream, {"job": job_id, "operations": operations})
            pipe.execute()
        result = time.perf_counter() - started, time.process_time() - cpu
        client.close()
        return result

    command = [main_python(), str(RUNNERS / "bare_stream.py"), url, stream, GROUP, str(data_dir)]
    return System(
        name="bare Redis Streams loop (2 processes)",
        enqueue=enqueue,
        commands=[command, command],
    )


def peer_system(name: str, python: Path, processes: int) -> System:
    """A framework from its own environment; ``name`` is celery, rq, rq-fork, arq, saq, dramatiq."""
    tool = python.parent
    module = name.split("-")[0]
    per_process: dict[str, list[str]] = {
        "rq": [str(tool / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-q", "default"],
        "rq-fork": [str(tool / "rq"), "worker", "-q", "default"],
        "arq": [str(tool / "arq"), "runners.peer_arq.WorkerSettings"],
    }
    grouped: dict[str, list[str]] = {
        "celery": [
            str(tool / "celery"), "-A", "runners.peer_celery", "worker", "-c", str(processes),
            "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "WARNING",
        ],
        "saq": [str(tool / "saq"), "runners.peer_saq.settings", "--workers", str(processes), "-q"],
        "dramatiq": [
            str(tool / "dramatiq"), "runners.peer_dramatiq", "--processes", str(processes),
            "--threads", "1",
        ],
    }  # fmt: skip
    if name in per_process:
        commands = [per_process[name]] * processes
        label = f"{name} ({processes} processes)"
    else:
        commands = [grouped[name]]
        label = f"{name} ({processes} worker processes)"
    labels = {"rq": "RQ SimpleWorker", "rq-fork": "RQ forking Worker"}

    def enqueue(ids: list[str]) -> tuple[float, float]:
        ids_file = BENCH / ".cache" / f"ids-{os.getpid()}.txt"
        ids_file.write_text("\n".join(ids))
        try:
            completed = subprocess.run(
                [str(python), "-m", "runners.enqueue_peer", module, str(ids_file)],
                env=_env_for_peers(),
                cwd=BENCH,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        finally:
            ids_file.unlink(missing_ok=True)
        found = json.loads(completed.stdout.strip().splitlines()[-1])
        return float(found["seconds"]), float(found["cpu"])

    return System(
        name=labels.get(name, name) + label[len(name) :],
        enqueue=enqueue,
        commands=commands,
    )


def stored(data_dir: Path) -> int:
    """Results stored so far (a temporary file is renamed into place once whole)."""
    with os.scandir(data_dir / "results") as entries:
        return sum(1 for entry in entries if not entry.name.startswith("."))


_PEER_ENV: dict[str, str] = {}
"""Where the current measurement's peers find Redis, the data and the operations."""


def _env_for_peers() -> dict[str, str]:
    return env(**_PEER_ENV)


@dataclass(frozen=True)
class Setup:
    url: str
    redis_pid: int
    data_dir: Path
    operations: str
    log: Path


def measure(system: System, setup: Setup, ids: list[str]) -> Drain:
    """Enqueue ``ids`` (originals already linked), start the workers, time the drain."""
    count = len(ids)
    url, data_dir, log = setup.url, setup.data_dir, setup.log
    client = redis.Redis.from_url(url)
    client.flushall()
    _PEER_ENV.clear()
    _PEER_ENV.update(
        {
            "BENCH_REDIS_URL": url,
            "BENCH_DATA_DIR": str(data_dir),
            "BENCH_OPERATIONS": setup.operations,
            "REDIS_URL": url,
            "IMGSTREAM_DATA_DIR": str(data_dir),
        }
    )
    seconds, enqueue_cpu = system.enqueue(ids)
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as sink:
        for command in system.commands:
            processes.append(
                subprocess.Popen(
                    command,
                    env=env(**_PEER_ENV, **system.extra_env),
                    cwd=BENCH,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    roots = [process.pid for process in processes]
    marks: dict[float, tuple[float, float, float, float, float]] = {}
    deadline = time.monotonic() + 120 + count / 20
    try:
        while True:
            done = stored(data_dir)
            for fraction in (0.1, 0.9):
                if fraction not in marks and done >= fraction * count:
                    marks[fraction] = (
                        time.monotonic(),
                        tree_cpu(roots),
                        tree_cpu([setup.redis_pid]),
                        time.process_time(),
                        machine_busy(),
                    )
            if done >= count:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{system.name}: {done} of {count} done; see {log}")
            time.sleep(0.005)
    finally:
        for process in processes:
            _stop(process)
        client.close()
    (t10, cpu10, redis10, self10, all10), (t90, cpu90, redis90, self90, all90) = (
        marks[0.1],
        marks[0.9],
    )
    window = max(1, round(0.8 * count))
    ours = (cpu90 - cpu10) + (redis90 - redis10) + (self90 - self10)
    return Drain(
        system=system.name,
        jobs=count,
        enqueue_rate=count / seconds,
        enqueue_cpu_us=1e6 * enqueue_cpu / count,
        drain_rate=window / (t90 - t10),
        worker_cpu_ms=1000 * (cpu90 - cpu10) / window,
        redis_cpu_us=1e6 * (redis90 - redis10) / window,
        other_cores=max(0.0, (all90 - all10) - ours) / (t90 - t10),
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
