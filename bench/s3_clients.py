"""S3 client choice and S3 requests per job, against a private SeaweedFS (docs/storage.md).

    .venv/bin/pip install obstore   # the contender; not a dependency of imgstream
    .venv/bin/python bench/s3_clients.py [--count 300] [--bytes 65536]

Part 1: small PUT and GET latency (median, p95) and client CPU per request of boto3 (what
``S3Storage`` uses) and obstore, one after the other on one connection each, after a warm-up.
Part 2: the S3 requests one job costs, counted on ``S3Storage``'s own clients while the store
is called as the API and the worker call it. Not part of ``make bench``: it compares clients,
not imgstream with its peers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from imgstream.config import Settings
from imgstream.jobs import new_job_id
from imgstream.s3_storage import S3Storage
from imgstream.setting_values import StorageKind
from imgstream.storage import spooled_source
from seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3  # type: ignore[import-not-found]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    name: str,
    put: Callable[[str, bytes], object],
    get: Callable[[str], bytes],
    count: int,
    body: bytes,
) -> None:
    for i in range(20):
        put(f"warm/{i}", body)
        get(f"warm/{i}")
    puts, gets = [], []
    began = cpu_seconds()
    for i in range(count):
        start = time.perf_counter()
        put(f"k/{i}", body)
        puts.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert len(get(f"k/{i}")) == len(body)
        gets.append(time.perf_counter() - start)
    cpu = (cpu_seconds() - began) / (2 * count)

    def ms(values: list[float], share: float) -> str:
        return f"{sorted(values)[int(len(values) * share)] * 1000:.2f}"

    print(
        f"| {name} | {statistics.median(puts) * 1000:.2f} | {ms(puts, 0.95)} "
        f"| {statistics.median(gets) * 1000:.2f} | {ms(gets, 0.95)} | {cpu * 1000:.2f} |"
    )


def clients(server: SeaweedS3, bucket: str, count: int, body: bytes) -> None:
    print("| client | PUT p50 ms | PUT p95 ms | GET p50 ms | GET p95 ms | client CPU ms/request |")
    print("|---|---|---|---|---|---|")
    boto = server.client()
    measure(
        "boto3",
        lambda key, data: boto.put_object(Bucket=bucket, Key=key, Body=data),
        lambda key: boto.get_object(Bucket=bucket, Key=key)["Body"].read(),
        count,
        body,
    )
    try:
        import obstore
        from obstore.store import S3Store
    except ImportError:
        print("| obstore | not installed (pip install obstore) | | | | |")
        return
    store = S3Store(
        bucket,
        endpoint=server.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        client_options={"allow_http": True},
    )
    measure(
        "obstore",
        lambda key, data: obstore.put(store, key, data),
        lambda key: bytes(obstore.get(store, key).bytes()),
        count,
        body,
    )


def requests_per_job(server: SeaweedS3, bucket: str, home: Path) -> None:
    os.environ.update(server.client_env(home))
    settings = Settings(
        storage=StorageKind.S3, s3_bucket=bucket, s3_endpoint_url=server.endpoint, data_dir=home
    )
    counted: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counted[model.name] += 1

    def job(storage: S3Storage, original: bytes) -> None:
        job_id = new_job_id()
        with tempfile.TemporaryFile() as upload:  # API: the probe, the upload
            upload.write(original)
            spooled_source(cast(BinaryIO, upload))
            storage.has_original(job_id)  # the result cache: is this original stored already?
            upload.seek(0)
            storage.save_original(job_id, cast(BinaryIO, upload))
        storage.original_source(job_id)  # worker: the render
        storage.save_result(job_id, b"r" * 20_000, "webp")  # worker: the result
        stored = storage.find_result(job_id, "webp")  # API: the download
        if stored is not None and stored.open is not None:
            b"".join(stored.open(None))
        storage.delete_job_files(job_id)  # janitor: retention

    for label, extra, size in (
        ("streamed download, 200 kB upload", {}, 200_000),
        ("presigned download, 200 kB upload", {"s3_presign": True}, 200_000),
        ("streamed download, 20 MB upload (8 MiB parts)", {}, 20_000_000),
    ):
        storage = S3Storage(settings.model_copy(update=extra))
        storage.client.meta.events.register("before-call.s3", count)
        counted.clear()
        job(storage, os.urandom(size))
        total = sum(counted.values())
        print(f"- {label}: {total} requests: " + ", ".join(f"{k} {v}" for k, v in counted.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--bytes", type=int, default=64 * 1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, SeaweedS3(Path(scratch) / "s3") as server:
        bucket = server.new_bucket()
        clients(server, bucket, args.count, os.urandom(args.bytes))
        print()
        requests_per_job(server, bucket, Path(scratch))


if __name__ == "__main__":
    main()
