"""What partitions and lanes cost in Redis commands: an idle worker's reads per second, and
commands per job through enqueue, start and finish, for 1 stream, 3 partitions, and 3
partitions x 10 lanes, against a private redis-server (``INFO commandstats`` deltas).

    .venv/bin/python bench/stream_reads.py      # about a minute; prints a Markdown table
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from imgstream.redis_server import RedisServer

LAYOUTS = {
    "1 stream": {},
    "3 partitions": {"IMGSTREAM_PARTITIONS": "3"},
    "3 partitions x 10 lanes": {
        "IMGSTREAM_PARTITIONS": "3",
        "IMGSTREAM_STREAM_PER_OPERATION": "true",
    },
}
IDLE_SECONDS = 10.0
JOBS = 200


def calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def worker_env(url: str, prefix: str, data: Path, layout: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_")}
    return {
        **env,
        "REDIS_URL": url,
        "IMGSTREAM_KEY_PREFIX": prefix,
        "IMGSTREAM_DATA_DIR": str(data),
        "IMGSTREAM_LOG_LEVEL": "WARNING",
        "IMGSTREAM_JANITOR_INTERVAL": "0",
        **layout,
    }


def idle_reads(url: str, prefix: str, data: Path, layout: dict[str, str]) -> float:
    """Commands per second Redis serves one idle worker process (heartbeats included)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "imgstream", "worker", "--concurrency", "1"],
        env=worker_env(url, prefix, data, layout),
    )
    try:
        while not client.zcard(f"{{{prefix}}}:workers"):
            time.sleep(0.1)
        time.sleep(2.0)  # past start-up (group creation, first recovery pass)
        before, began = calls(client), time.monotonic()
        time.sleep(IDLE_SECONDS)
        return (calls(client) - before) / (time.monotonic() - began)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        client.close()


def per_job(url: str, prefix: str, data: Path, layout: dict[str, str]) -> float:
    """Commands per job: enqueue (the API's script) and a burst worker's start and finish.
    No original is stored, so each job fails at once (``original_missing``): the count is the
    queue's, not the image work's."""
    import anyio

    from imgstream.config import Settings
    from imgstream.deployment import Deployment
    from imgstream.jobs import StreamEntry

    client = redis.Redis.from_url(url, decode_responses=True)
    settings = Settings(
        redis_url=url,
        key_prefix=prefix,
        data_dir=data,
        partitions=int(layout.get("IMGSTREAM_PARTITIONS", "1")),
        stream_per_operation=layout.get("IMGSTREAM_STREAM_PER_OPERATION") == "true",
    )

    async def enqueue() -> None:
        deployment = Deployment.open(settings, one_shot=True)
        await deployment.queue.ensure_group()
        for index in range(JOBS):
            job_id = deployment.queue.new_job_id()
            operation = ("blur", "resize", "grayscale")[index % 3]
            await deployment.queue.enqueue(job_id, StreamEntry(job_id, f'[{{"op":"{operation}"}}]'))
        await deployment.aclose()

    before = calls(client)
    anyio.run(enqueue)
    subprocess.run(
        [sys.executable, "-m", "imgstream", "worker", "--burst"],
        env=worker_env(url, prefix, data, layout),
        check=True,
    )
    total = calls(client) - before
    client.close()
    return total / JOBS


def main() -> None:
    with tempfile.TemporaryDirectory() as root, RedisServer(Path(root) / "redis") as server:
        print("| layout | streams | idle worker: commands/s | commands per job |")
        print("|---|---|---|---|")
        for index, (name, layout) in enumerate(LAYOUTS.items()):
            streams = int(layout.get("IMGSTREAM_PARTITIONS", "1")) * (
                10 if layout.get("IMGSTREAM_STREAM_PER_OPERATION") else 1
            )
            data = Path(root) / f"data{index}"
            idle = idle_reads(server.url, f"idle{index}", data, layout)
            job = per_job(server.url, f"jobs{index}", data, layout)
            print(f"| {name} | {streams} | {idle:.1f} | {job:.1f} |")


if __name__ == "__main__":
    main()
