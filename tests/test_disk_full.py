"""A full data directory against the real service (issue 11), on a small tmpfs of its own.

Uploads into a full disk get ``507`` JSON with ``Retry-After`` and leave no partial file;
below the reserve (``IMGSTREAM_MIN_FREE_BYTES``) uploads are refused before anything is
written and ``/readyz`` says why; a worker whose result cannot be written waits the full disk
out with the job in hand, under the same attempt, and finishes it once there is room.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgstream.redis_server import RedisServer

from images import encode, photo
from service import Service, start, stop

pytestmark = pytest.mark.slow

DISK_MB = 24
GUARD = 60.0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB mounted for this test alone (root only: skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a file that takes all the space but ``leave`` bytes (as near as blocks allow)."""
    filler = directory / "filler"
    with filler.open("wb") as sink:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                stats = os.statvfs(directory)
                if stats.f_bavail * stats.f_frsize - chunk < leave:
                    break
                try:
                    sink.write(b"\0" * chunk)
                    sink.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return filler


def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def launch(redis_server: RedisServer, disk: Path, **extra: str) -> Service:
    """The service with the tmpfs as its data directory (its log goes beside, on another disk)."""
    return Service.launch(
        redis_server.url, disk, f"disk-{uuid.uuid4().hex[:8]}", concurrency=1, **extra
    )


def stored(service: Service) -> list[str]:
    return sorted(
        path.name
        for kind in ("originals", "results")
        for path in (service.data_dir / kind).iterdir()
    )


def test_an_upload_into_a_full_disk_gets_507_and_leaves_nothing(
    redis_server: RedisServer, disk: Path
) -> None:
    service = launch(redis_server, disk, IMGSTREAM_MIN_FREE_BYTES="0")
    try:
        big = encode(photo(1200, 1200), "png")  # larger than the room left
        filler = fill(disk, leave=len(big) // 4)
        answer = service.submit(big, "big.png", operation="grayscale")
        assert answer.status_code == 507, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "insufficient_storage"
        assert int(answer.headers["retry-after"]) >= 1
        assert stored(service) == [], "a partial file was left behind"
        filler.unlink()
        again = service.submit(big, "big.png", operation="grayscale")
        assert again.status_code == 202, again.text
        assert service.wait(again.json()["id"])["status"] == "done"
    finally:
        service.close()


def test_below_the_reserve_uploads_get_507_and_readyz_says_why(
    redis_server: RedisServer, disk: Path
) -> None:
    reserve = 4 << 20
    service = launch(
        redis_server, disk, IMGSTREAM_MIN_FREE_BYTES=str(reserve), IMGSTREAM_READY_WORKER_AGE="0"
    )
    try:
        assert service.http.get("/readyz").status_code == 200
        filler = fill(disk, leave=reserve // 2)
        answer = service.submit(encode(photo(40, 30), "png"), "a.png", operation="grayscale")
        assert answer.status_code == 507, answer.text
        assert "IMGSTREAM_MIN_FREE_BYTES" in answer.json()["error"]["message"]
        ready = service.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "disk_full"
        assert stored(service) == []
        filler.unlink()
        assert service.http.get("/readyz").status_code == 200
    finally:
        service.close()


def test_a_worker_waits_out_a_full_disk_and_keeps_the_job(
    redis_server: RedisServer, disk: Path
) -> None:
    service = launch(redis_server, disk, IMGSTREAM_MIN_FREE_BYTES="0")
    try:
        assert stop(service.workers) == 0  # the job waits in the queue while the disk fills
        job_id = service.submit(encode(photo(400, 300), "png"), "a.png", operation="grayscale")
        job_id = job_id.json()["id"]
        filler = fill(disk)  # its result cannot be written
        service.workers = start(["worker", "--concurrency", "1"], service.env, service.log)
        until(lambda: "the disk is full" in service.log.read_text(), "the worker says so")
        job = service.http.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "processing" and job["attempts"] == 1, job
        filler.unlink()
        job = service.wait(job_id)
        assert job["status"] == "done" and job["attempts"] == 1, job
        assert service.http.get(f"/api/jobs/{job_id}/result").status_code == 200
    finally:
        service.close()
