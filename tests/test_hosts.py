"""Several hosts on one machine: Redis, S3 (SeaweedFS), two API hosts and two worker hosts,
each in a network namespace of its own made by the test, sharing nothing but the network
(every process has its own data directory; images go through S3). One worker host is cut
off (its link taken down) while it holds a job; the other takes its work over, and every
job, uploaded through either API and read through the other, ends done. The test itself
talks to them from a client host of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from imgstream.redis_server import RedisServer, free_port
from netns import Network, unavailable
from seaweed import SeaweedS3

from fleet import worker_pids
from images import encode, photo
from service import (
    SLOW_OPERATIONS,
    pid_of_consumer,
    service_env,
    start,
    stop,
    wait_for,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow

HOSTS = ["redis", "s3", "api1", "api2", "worker1", "worker2", "client"]
JOBS = 18
OPERATIONS = '[{"op":"blur","sigma":8},{"op":"resize","width":300}]'


@pytest.fixture
def network() -> Iterator[Network]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"several hosts need network namespaces: {reason}")
    with Network(HOSTS) as made:
        yield made


def kill_pool(pool: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker supervisor and its workers (a host that is gone cannot stop them)."""
    for pid in worker_pids(pool.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pool.kill()
    pool.wait()


def test_a_worker_host_cut_off_mid_run_loses_no_job(network: Network, tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        with network.entered("redis"):
            server = RedisServer(tmp_path / "redis", host=network.address("redis")).start()
        cleanup.callback(server.stop)
        with network.entered("s3"):
            s3 = SeaweedS3(tmp_path / "s3", ip=network.address("s3"))
            cleanup.callback(s3.stop)
            s3.start()
            bucket = s3.new_bucket()
        prefix = f"hosts-{uuid.uuid4().hex[:6]}"
        shared = {
            "IMGSTREAM_STORAGE": "s3",
            "IMGSTREAM_S3_BUCKET": bucket,
            "IMGSTREAM_S3_ENDPOINT_URL": s3.endpoint,
            "IMGSTREAM_VISIBILITY_TIMEOUT": "1",
            "IMGSTREAM_RETRY_BACKOFF": "0.05",
            "IMGSTREAM_REDIS_TIMEOUT": "1",
            "IMGSTREAM_LOG_LEVEL": "INFO",
            **s3.client_env(tmp_path),
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        urls: dict[str, str] = {}
        for name in ("api1", "api2", "worker1", "worker2"):
            port = free_port()
            (tmp_path / name).mkdir()
            env = service_env(
                server.url, tmp_path / name, prefix,
                IMGSTREAM_HOST=network.address(name), IMGSTREAM_PORT=str(port), **shared,
            )  # fmt: skip
            command = ["api"] if name.startswith("api") else ["worker", "--concurrency", "2"]
            with network.entered(name):
                process = start(command, env, tmp_path / f"{name}.log")
            processes[name] = process
            cleanup.callback(kill_pool if name == "worker1" else stop, process)
            urls[name] = f"http://{network.address(name)}:{port}"
        with network.entered("client"):
            apis = [cleanup.enter_context(httpx.Client(base_url=urls[n], timeout=30))
                    for n in ("api1", "api2")]  # fmt: skip
            raw = cleanup.enter_context(
                redis.Redis(host=network.address("redis"), port=server.port, decode_responses=True)
            )
            for name in ("api1", "api2"):
                wait_until_healthy(urls[name], processes[name])

            small, big = encode(photo(800, 600), "jpeg"), encode(photo(2400, 2400), "jpeg")
            jobs = []
            for index in range(JOBS):
                slow = index % 6 == 0  # a second or more: worker host 1 is caught holding one
                response = apis[index % 2].post(
                    "/api/jobs", files={"image": (f"{index}.jpg", big if slow else small)},
                    data={"operations": SLOW_OPERATIONS if slow else OPERATIONS},
                )  # fmt: skip
                assert response.status_code == 202, response.text
                jobs.append(response.json()["id"])

            def held_by_worker_host_1() -> list[str]:
                doomed = worker_pids(processes["worker1"].pid)
                return [
                    entry["message_id"]
                    for entry in raw.xpending_range(
                        f"{{{prefix}}}:jobs", "imgstream-workers", "-", "+", JOBS
                    )
                    if pid_of_consumer(entry["consumer"]) in doomed
                ]

            wait_for(lambda: bool(held_by_worker_host_1()), "worker host 1 took no job", 60)
            network.cut("worker1")
            stranded = held_by_worker_host_1()  # it cannot acknowledge anything any more
            assert stranded, "worker host 1 ended its jobs before it was cut off"

            ended = {}
            for index, job_id in enumerate(jobs):
                reader = apis[(index + 1) % 2]  # read through the API it was not uploaded to

                def job_ended(reader: httpx.Client = reader, job_id: str = job_id) -> bool:
                    ended[job_id] = reader.get(f"/api/jobs/{job_id}").json()
                    return bool(ended[job_id]["status"] in ("done", "failed"))

                wait_for(job_ended, f"job {job_id} never ended", timeout=90)
                result = reader.get(f"/api/jobs/{job_id}/result")
                assert result.status_code == 200, result.text
                assert result.content[:2] == b"\xff\xd8"

    assert [job_id for job_id, job in ended.items() if job["status"] != "done"] == []
    taken_over = (tmp_path / "worker2.log").read_text()
    assert all(f"took over entry {entry}" in taken_over for entry in stranded), stranded
    assert [path for name in processes for path in (tmp_path / name).rglob("*.jpg")] == []
