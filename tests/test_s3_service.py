"""The service on S3 end to end: real API and worker processes, each with a data directory and
a temporary directory of its own (as on separate hosts), sharing only Redis and the bucket.
A job uploaded to one API is read through another; downloads stream (with ranges and HEAD)
or redirect to a presigned URL; a large upload goes in parts; nothing of an image is left on
any local disk; a missing bucket or refused keys stop a process at start-up, saying why; an
unreachable store is a 503, never a 500."""

from __future__ import annotations

import io
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from imgstream.keys import Keys, partition_of
from imgstream.processes import EXIT_REFUSED
from imgstream.redis_server import RedisServer, free_port
from imgstream.setting_values import MIB
from redis_cluster import RedisCluster
from seaweed import SeaweedS3

from images import encode, photo
from inprocess import assert_error
from service import service_env, start, stop, wait_for, wait_until_healthy

pytestmark = pytest.mark.slow


class Host:
    """One process of the fleet, as if alone on its machine: its own data and temp dirs."""

    def __init__(self, root: Path, name: str, env: dict[str, str]) -> None:
        self.data_dir = root / name / "data"
        self.tmp_dir = root / name / "tmp"
        self.data_dir.mkdir(parents=True)
        self.tmp_dir.mkdir(parents=True)
        self.log = root / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env,
            "IMGSTREAM_DATA_DIR": str(self.data_dir),
            "IMGSTREAM_PORT": str(self.port),
            "TMPDIR": str(self.tmp_dir),
        }

    def files(self) -> list[Path]:
        """Every file left in this host's data and temporary directories."""
        return [p for d in (self.data_dir, self.tmp_dir) for p in d.rglob("*") if p.is_file()]


@pytest.fixture
def s3_env(redis_server: RedisServer, seaweed: SeaweedS3, tmp_path: Path) -> dict[str, str]:
    env = service_env(
        redis_server.url,
        tmp_path / "unused",
        f"s3-{uuid.uuid4().hex[:8]}",
        IMGSTREAM_STORAGE="s3",
        IMGSTREAM_S3_BUCKET=seaweed.new_bucket(),
        IMGSTREAM_S3_ENDPOINT_URL=seaweed.endpoint,
        IMGSTREAM_S3_PREFIX="imgstream",
        IMGSTREAM_S3_MULTIPART_THRESHOLD=str(5 * MIB),
        IMGSTREAM_S3_PART_BYTES=str(5 * MIB),
        IMGSTREAM_READY_WORKER_AGE="0",
    )
    env.update(seaweed.client_env(tmp_path))
    return env


@contextmanager
def running(host: Host, *arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    process = start(list(arguments), host.env, host.log)
    try:
        if arguments[0] == "api":
            wait_until_healthy(host.url, process, timeout=60)
        yield process
    finally:
        stop(process)


def wait_done(http: httpx.Client, url: str, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def finished() -> bool:
        found.update(http.get(f"{url}/api/jobs/{job_id}").json())
        return found.get("status") in ("done", "failed")

    wait_for(finished, f"job {job_id} did not finish", timeout=120)
    return found


def noise_png(megabytes: int) -> bytes:
    """A PNG that does not compress: about ``megabytes`` MiB."""
    side = int((megabytes * MIB / 3) ** 0.5)
    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def test_fleet_on_s3_shares_nothing_but_redis_and_the_bucket(
    s3_env: dict[str, str], seaweed: SeaweedS3, tmp_path: Path
) -> None:
    uploads, reads = Host(tmp_path, "api-a", s3_env), Host(tmp_path, "api-b", s3_env)
    signer = Host(tmp_path, "api-c", {**s3_env, "IMGSTREAM_S3_PRESIGN": "true"})
    worker = Host(tmp_path, "worker", s3_env)
    bucket = s3_env["IMGSTREAM_S3_BUCKET"]
    with (
        running(uploads, "api"),
        running(reads, "api"),
        running(signer, "api"),
        running(worker, "worker", "--concurrency", "1"),
        httpx.Client(timeout=60) as http,
    ):
        assert http.get(f"{reads.url}/readyz").status_code == 200
        response = http.post(
            f"{uploads.url}/api/jobs",
            files={"image": ("photo.jpg", encode(photo(640, 480), "jpeg"))},
            data={"operation": "resize", "width": "200", "format": "png"},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert wait_done(http, reads.url, job_id)["status"] == "done"

        result = http.get(f"{reads.url}/api/jobs/{job_id}/result")
        assert result.status_code == 200 and result.headers["content-type"] == "image/png"
        stored = seaweed.client().get_object(Bucket=bucket, Key=f"imgstream/results/{job_id}.png")
        assert result.content == stored["Body"].read()
        assert Image.open(io.BytesIO(result.content)).size == (200, 150)
        size = len(result.content)

        part = http.get(f"{reads.url}/api/jobs/{job_id}/result", headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == result.content[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{size}"
        tail = http.get(f"{reads.url}/api/jobs/{job_id}/result", headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == result.content[-5:]
        outside = http.get(
            f"{reads.url}/api/jobs/{job_id}/result", headers={"Range": f"bytes={size}-"}
        )
        assert_error(outside, 416, "range_not_satisfiable")
        head = http.head(f"{reads.url}/api/jobs/{job_id}/result")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(size)

        redirect = http.get(f"{signer.url}/api/jobs/{job_id}/result")
        assert redirect.status_code == 307
        assert redirect.headers["location"].startswith(seaweed.endpoint)
        assert http.get(redirect.headers["location"]).content == result.content

        big = noise_png(6)
        response = http.post(
            f"{uploads.url}/api/jobs",
            files={"image": ("big.png", big)},
            data={"operation": "grayscale", "format": "jpeg"},
        )
        assert response.status_code == 202, response.text
        big_id = response.json()["id"]
        original = seaweed.client().head_object(Bucket=bucket, Key=f"imgstream/originals/{big_id}")
        assert original["ContentLength"] == len(big)
        assert original["ETag"].strip('"').endswith("-2")  # stored in two parts
        assert wait_done(http, uploads.url, big_id)["status"] == "done"
        assert http.get(f"{reads.url}/api/jobs/{big_id}/result").status_code == 200
    for host in (uploads, reads, signer, worker):
        assert host.files() == [], f"{host.data_dir.parent.name} kept files on local disk"


def test_a_partitioned_cluster_fleet_on_s3_shares_nothing_but_redis_and_the_bucket(
    s3_env: dict[str, str], redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """Cluster + 3 partitions + S3, each API and worker with its own disk: jobs uploaded to
    one API spread over the partitions (on three masters) and are read through another."""
    prefix = redis_cluster.spread_prefix(3)
    env = {
        **s3_env,
        "REDIS_URL": redis_cluster.url,
        "IMGSTREAM_REDIS_CLUSTER": "true",
        "IMGSTREAM_PARTITIONS": "3",
        "IMGSTREAM_KEY_PREFIX": prefix,
    }
    hosts = [Host(tmp_path, name, env) for name in ("api-a", "api-b", "worker-a", "worker-b")]
    uploads, reads, *workers = hosts
    with (
        running(uploads, "api"),
        running(reads, "api"),
        running(workers[0], "worker", "--concurrency", "1"),
        running(workers[1], "worker", "--concurrency", "1"),
        httpx.Client(timeout=60) as http,
    ):
        ids = []
        for width in (30, 40, 50, 60, 70, 80):
            response = http.post(
                f"{uploads.url}/api/jobs",
                files={"image": ("photo.jpg", encode(photo(160, 120), "jpeg"))},
                data={"operation": "resize", "width": str(width), "format": "png"},
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        assert {partition_of(job_id) for job_id in ids} == {0, 1, 2}
        for job_id, width in zip(ids, (30, 40, 50, 60, 70, 80), strict=True):
            assert wait_done(http, reads.url, job_id)["status"] == "done"
            result = http.get(f"{reads.url}/api/jobs/{job_id}/result")
            assert result.status_code == 200
            assert Image.open(io.BytesIO(result.content)).size[0] == width
        stats = http.get(f"{reads.url}/api/stats").json()
        assert [p["partition"] for p in stats["partitions"]] == [0, 1, 2]
        assert stats["jobs"]["done"] == 6 and stats["queue"]["backlog"] == 0
        for part in range(3):
            counters = redis_cluster.owner_reply("hgetall", Keys(prefix).partition(part).metrics)
            assert int(counters.get("jobs:done:resize", 0)) == 2, counters
    for host in hosts:
        assert host.files() == [], f"{host.data_dir.parent.name} kept files on local disk"


def exits_with(host: Host, *arguments: str) -> tuple[int, str]:
    process = start(list(arguments), host.env, host.log)
    try:
        code = process.wait(120)
    finally:
        stop(process)
    return code, host.log.read_text()


def test_missing_bucket_stops_the_api_and_the_worker(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**s3_env, "IMGSTREAM_S3_BUCKET": "never-made-bucket"}
    code, log = exits_with(Host(tmp_path, "api", env), "api")
    assert code != 0 and "the bucket 'never-made-bucket' does not exist" in log
    code, log = exits_with(Host(tmp_path, "worker", env), "worker", "--concurrency", "1")
    assert code == EXIT_REFUSED and "worker refuses to start" in log and "does not exist" in log


def test_refused_keys_stop_the_api_and_the_worker(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = {**s3_env, "AWS_SECRET_ACCESS_KEY": "a-wrong-secret-key"}
    code, log = exits_with(Host(tmp_path, "api", env), "api")
    assert code != 0 and "refused the credentials" in log
    code, log = exits_with(Host(tmp_path, "worker", env), "worker", "--concurrency", "1")
    assert code == EXIT_REFUSED and "refused the credentials" in log


def test_an_unreachable_store_is_a_503(
    s3_env: dict[str, str], tmp_path: Path, redis_server: RedisServer
) -> None:
    with SeaweedS3(tmp_path / "own-s3") as own:
        bucket = own.new_bucket()
        env = {**s3_env, "IMGSTREAM_S3_ENDPOINT_URL": own.endpoint, "IMGSTREAM_S3_BUCKET": bucket}
        env["IMGSTREAM_S3_TIMEOUT"] = "2"
        api, worker = Host(tmp_path, "api", env), Host(tmp_path, "worker", env)
        with running(api, "api"), httpx.Client(timeout=60) as http:
            response = http.post(
                f"{api.url}/api/jobs",
                files={"image": ("a.jpg", encode(photo(64, 48), "jpeg"))},
                data={"operation": "grayscale"},
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            with running(worker, "worker", "--concurrency", "1"):
                assert wait_done(http, api.url, job_id)["status"] == "done"
            own.stop()
            download = http.get(f"{api.url}/api/jobs/{job_id}/result")
            assert_error(download, 503, "storage_unavailable")
            ready = http.get(f"{api.url}/readyz")
            message = assert_error(ready, 503, "storage_unavailable")
            assert own.endpoint in message
            refused = http.post(
                f"{api.url}/api/jobs",
                files={"image": ("a.jpg", encode(photo(64, 48), "jpeg"))},
                data={"operation": "grayscale"},
            )
            assert_error(refused, 503, "storage_unavailable")
            assert refused.headers["retry-after"]
            assert "Traceback" not in api.log.read_text()
