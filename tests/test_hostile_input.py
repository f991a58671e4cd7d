"""Hostile and broken uploads through the running service: real API, real workers, real Redis.

Two corpora: the shared real-world one (302 files other projects collected as crash, OOM and
decoder-bug repros, plus awkward valid files) and one generated here. For every file: a clear
4xx at upload, a ``failed`` job with a clear message, or an image, as its class demands; never a
5xx or a stuck job. Afterwards the same worker processes are alive, none grew past the memory
ceiling, nothing was written outside the data directory, and a normal job still comes out right.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
import pyvips

from imgstream import imaging
from imgstream.operations import JobSpec, Limits, Resize
from imgstream.redis_server import RedisServer

from batch import Expect, Sample, run_batch
from corpus import find_corpus, load_corpus
from fleet import MEMORY_CEILING_MB, deaths, peak_rss_mb, stray_files, worker_pids
from hostile import hostile_samples
from images import encode, photo
from service import Service

pytestmark = pytest.mark.slow

CORPUS_EXPECT = {
    "refuse": Expect.REFUSED,
    "malformed": Expect.IMAGE_OR_ERROR,
    "tricky-valid": Expect.IMAGE,
    "codec-gap": Expect.IMAGE_OR_ERROR,
}


@dataclass
class Running:
    service: Service
    root: Path
    workers: set[int]

    def problems(self) -> list[str]:
        """Everything wrong with the fleet now, after a batch."""
        found = []
        now = worker_pids(self.service.workers.pid)
        if now != self.workers:
            found.append(f"worker processes changed: {sorted(self.workers)} -> {sorted(now)}")
        log = self.service.log.read_text()
        found += [f"a worker died: {line}" for line in deaths(log)]
        if "Traceback" in log:
            found.append(f"a traceback in the service log:\n{log[log.index('Traceback') :][:2000]}")
        for pid in now:
            peak = peak_rss_mb(pid)
            if peak > MEMORY_CEILING_MB:
                found.append(f"worker {pid} peaked at {peak:.0f} MiB > {MEMORY_CEILING_MB} MiB")
        allowed = {self.service.log}
        found += [
            f"written outside the data directory: {path}"
            for path in stray_files(self.root, self.service.data_dir, allowed)
        ]
        return found

    def normal_job_problems(self) -> list[str]:
        """A plain job after the storm: done, and the same pixels as ``imaging`` gives."""
        original = encode(photo(320, 240, seed=11), "jpeg")
        response = self.service.submit(original, "after.jpg", operation="resize", width="160")
        if response.status_code != 202:
            return [f"a normal upload after the batch answered {response.status_code}"]
        job = self.service.wait(response.json()["id"], timeout=30)
        if job["status"] != "done":
            return [f"a normal job after the batch ended {job}"]
        result = self.service.http.get(job["result"]["url"]).content
        expected = imaging.render(original, JobSpec(operations=(Resize(width=160),)), Limits())
        got, want = (
            pyvips.Image.new_from_buffer(result, ""),
            pyvips.Image.new_from_buffer(expected.data, ""),
        )
        if (got.width, got.height) != (want.width, want.height):
            return [f"a normal job came out {got.width}x{got.height}, not 160x120"]
        difference = float((got - want).abs().avg())
        return [f"a normal job differs by {difference:.2f}"] if difference >= 1.0 else []


@pytest.fixture(scope="module")
def running(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("hostile")
    scratch = {name: root / "scratch" / name for name in ("tmp", "home", "cwd")}
    for directory in scratch.values():
        directory.mkdir(parents=True)
    service = Service.launch(
        redis_server.url,
        root / "data",
        f"hostile-{uuid.uuid4().hex[:8]}",
        concurrency=2,
        cwd=scratch["cwd"],
        TMPDIR=str(scratch["tmp"]),
        HOME=str(scratch["home"]),
        IMGSTREAM_RATE_LIMIT_PER_SECOND="0",  # thousands of requests from one client, on purpose
    )
    try:
        fleet = Running(service, root, set())
        assert fleet.normal_job_problems() == []  # the workers are up and serving
        fleet.workers = worker_pids(service.workers.pid)
        assert len(fleet.workers) == 2
        yield fleet
    finally:
        statuses = service.close()
    assert statuses == (0, 0), service.log.read_text()[-3000:]


HOSTILE_SAMPLES = 96
"""How many samples tests/hostile.py builds: change it with the builders."""


def test_real_world_corpus(running: Running) -> None:
    root = find_corpus()
    if root is None:
        reason = "shared/corpus/real-world is not beside this checkout (../shared or above)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the corpus test: {reason}")
        pytest.skip(reason)
    files = load_corpus(root)
    assert len(files) >= 300
    samples = [
        Sample(file.name, file.path.read_bytes(), CORPUS_EXPECT[file.kind], Path(file.name).name)
        for file in files
    ]
    problems = run_batch(running.service, samples)
    problems += running.problems() + running.normal_job_problems()
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_generated_hostile_corpus(running: Running) -> None:
    with Listener() as listener:
        samples = hostile_samples(listener.url)
        assert len(samples) == HOSTILE_SAMPLES  # a builder that silently yields less fails
        assert len({sample.name for sample in samples}) == HOSTILE_SAMPLES
        problems = run_batch(running.service, samples)
    if listener.connections:
        problems.append(f"the service fetched an external reference {listener.connections}x")
    problems += running.problems() + running.normal_job_problems()
    assert not list(running.root.parent.rglob("escape.png"))  # a client name is never a path
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


class Listener:
    """A loopback TCP port that counts connections: where hostile SVGs point their references."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()
