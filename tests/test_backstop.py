"""The job-timeout backstop, for real: a render that libvips cannot stop makes its worker
process exit with code 70, the supervisor starts a fresh one, and the job is recovered.

The stuck read is honest: the test holds a Linux write lease (``F_SETLEASE``) on the job's
stored original, so the worker's ``open()`` of it (inside libvips) blocks in the kernel
until the lease is released or the kernel breaks it (``/proc/sys/fs/lease-break-time``, 45 s
by default). A blocked ``open()`` never reaches libvips' evaluation loop, so the kill flag
set at ``IMGSTREAM_JOB_TIMEOUT`` cannot stop it: only the backstop can. ``stat()``, which the
worker does first, does not wait for a lease.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from imgstream.redis_server import RedisServer
from imgstream.worker import EXIT_STUCK

from service import api_alone, start, stop

HOLD_LEASE = """
import fcntl, os, signal, sys
signal.signal(signal.SIGIO, signal.SIG_IGN)  # the lease-break notice; we ignore it
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
except OSError as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(0)
print("held", flush=True)
sys.stdin.readline()
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"""


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_stuck_in_a_read_exits_70_and_its_job_is_recovered(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = {
        "IMGSTREAM_JOB_TIMEOUT": "2",
        "IMGSTREAM_JOB_BACKSTOP": "1",
        "IMGSTREAM_VISIBILITY_TIMEOUT": "2",
        "IMGSTREAM_MAX_ATTEMPTS": "5",
    }
    with api_alone(redis_server.url, tmp_path, **settings) as api, httpx.Client() as http:
        accepted = api.upload(http)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        original = api.data_dir / "originals" / job_id
        assert original.is_file()
        with subprocess.Popen(
            [sys.executable, "-c", HOLD_LEASE, str(original)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdin is not None and holder.stdout is not None
            answer = holder.stdout.readline().strip()
            if answer != "held":
                pytest.skip(f"this filesystem refuses a write lease, so no stuck read: {answer}")
            worker = start(["worker", "--concurrency", "1"], api.env, api.log)
            try:
                wait_for(
                    "the stuck worker process to exit",
                    lambda: f"exited with {EXIT_STUCK}" in api.log.read_text(),
                )
                log = api.log.read_text()
                assert f"job {job_id} is stuck past its time limit; exiting" in log
                status = http.get(f"{api.url}/api/jobs/{job_id}").json()
                assert status["status"] in ("queued", "processing"), status  # not ended by it
                holder.stdin.close()  # the read unblocks: the next attempt can render
                holder.wait(30)

                def ended() -> bool:
                    body = http.get(f"{api.url}/api/jobs/{job_id}").json()
                    return body["status"] in ("done", "failed")

                wait_for("the recovered job to end", ended)
                final = http.get(f"{api.url}/api/jobs/{job_id}").json()
                assert final["status"] == "done", final
                assert final["attempts"] >= 2, final  # the stuck attempt was counted
                assert http.get(f"{api.url}/api/jobs/{job_id}/result").status_code == 200
            finally:
                stop(worker)
