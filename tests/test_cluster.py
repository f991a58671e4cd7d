"""The service on a real 3-master Redis Cluster (``IMGSTREAM_REDIS_CLUSTER=true``): API and
worker processes use the cluster client, every script touches one slot, live status works
through classic pub/sub, and several deployments (prefixes) spread over the masters."""

from __future__ import annotations

import collections
import json
import time
import uuid
from pathlib import Path

import pytest
import redis

from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.fleet_snapshot import Monitor
from imgstream.jobs import new_job_id
from imgstream.keys import Keys, partition_of
from pacing import feed_and_kill, listen_for_final_statuses, oldest_holder
from redis_cluster import RedisCluster

from fleet import worker_pids
from images import encode, photo
from service import Service


def test_partition_zero_keeps_the_one_node_layout() -> None:
    keys = Keys("imgstream")
    job_id = new_job_id()
    assert partition_of(job_id) == 0
    assert keys.stream == "{imgstream}:jobs"
    assert keys.job(job_id) == f"{{imgstream}}:job:{job_id}"
    assert keys.metrics == "{imgstream}:metrics"
    assert keys.workers == "{imgstream}:workers"
    assert keys.job_of_channel(keys.channel(job_id)) == job_id


def test_a_partitioned_id_names_its_partition_and_its_tag() -> None:
    job_id = "0002" + "a" * 8 + "8" + "b" * 19
    keys = Keys("imgstream")
    assert partition_of(job_id) == 2
    assert keys.job(job_id) == f"{{imgstream:2}}:job:{job_id}"
    assert keys.partition(2).stream == "{imgstream:2}:jobs"
    assert keys.partition(2).workers == "{imgstream}:workers"
    assert keys.job_of_channel(keys.channel(job_id)) == job_id


@pytest.mark.anyio
async def test_queue_scripts_run_on_the_cluster(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_cluster.url,
        redis_cluster=True,
        data_dir=tmp_path / "data",
        key_prefix=f"c-{uuid.uuid4().hex[:8]}",
    )
    deployment = Deployment.open(settings)
    try:
        assert await deployment.queue.ping()
        await deployment.queue.ensure_group()
        assert await deployment.queue.backlog() == 0
        snapshot = await Monitor.of(deployment).snapshot()
        assert snapshot.backlog == 0
        assert snapshot.memory is not None
    finally:
        await deployment.aclose()


def test_jobs_end_done_on_the_cluster_across_deployments(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    services = [
        Service.launch(
            redis_cluster.url,
            tmp_path / f"data{index}",
            f"cl{index}-{uuid.uuid4().hex[:6]}",
            IMGSTREAM_REDIS_CLUSTER="true",
        )
        for index in range(3)
    ]
    try:
        data = encode(photo(64, 48), "png")
        accepted = []
        for service in services:
            for _ in range(4):
                response = service.submit(data, "a.png", operations='[{"op":"grayscale"}]')
                assert response.status_code == 202, response.text
                accepted.append((service, response.json()["id"]))
        service, first = accepted[0]
        with service.http.stream("GET", f"/api/jobs/{first}/events", timeout=60) as events:
            assert events.status_code == 200
            for line in events.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["status"] == "done":
                    break
        for service, job_id in accepted:
            assert service.wait(job_id, timeout=120)["status"] == "done"
            result = service.http.get(f"/api/jobs/{job_id}/result")
            assert result.status_code == 200
        for service in services:
            counters = redis_cluster.owner_reply("hgetall", Keys(service.prefix).metrics)
            done = [int(v) for k, v in counters.items() if k.startswith("jobs:done:")]
            assert sum(done) == 4, counters
    finally:
        statuses = [s.close() for s in services]
    assert all(status == (0, 0) for status in statuses), services[0].log.read_text()[-3000:]


def test_chaos_on_the_cluster_loses_and_duplicates_nothing(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """Workers SIGKILLed while they hold jobs of three partitions (spread over the masters):
    every job ends done, once, and each partition counts its own."""
    prefix = f"chaos-{uuid.uuid4().hex[:6]}"
    parts = 3
    service = Service.launch(
        redis_cluster.url, tmp_path / "data", prefix, concurrency=3,
        IMGSTREAM_REDIS_CLUSTER="true", IMGSTREAM_PARTITIONS=str(parts),
        IMGSTREAM_MAX_ATTEMPTS="20", IMGSTREAM_READ_BATCH="4",
        IMGSTREAM_VISIBILITY_TIMEOUT="1", IMGSTREAM_RETRY_BACKOFF="0.05",
        IMGSTREAM_LOG_LEVEL="INFO",
    )  # fmt: skip
    finals, _, drain = listen_for_final_statuses(redis_cluster.url, prefix, parts)
    streams = [Keys(prefix).partition(part).stream for part in range(parts)]
    raw = redis.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    data = encode(photo(320, 240), "png")
    operations = '[{"op":"blur","sigma":2},{"op":"resize","width":100}]'

    def submit(index: int) -> str:
        response = service.submit(data, f"{index}.png", operations=operations)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    try:
        ids, kills = feed_and_kill(
            submit,
            lambda: oldest_holder(raw, streams, service.workers.pid),
            finals,
            jobs=60,
            kills=3,
            kill_every=8,
        )
        results = {job_id: service.wait(job_id, timeout=300) for job_id in ids}
    finally:
        drain()
        raw.close()
        service.close()
    assert len(kills) == 3, kills
    assert "took over entry" in service.log.read_text(), "killed workers' jobs must be recovered"
    assert [job_id for job_id, job in results.items() if job["status"] != "done"] == []
    assert {job["result"]["width"] for job in results.values()} == {100}
    assert set(finals.values()) == {1}, [k for k, v in finals.items() if v != 1]
    assert set(finals) == set(ids)
    per_partition = collections.Counter(partition_of(job_id) for job_id in ids)
    assert set(per_partition) == set(range(parts)), per_partition  # in flight in all three
    for part in range(parts):
        counters = redis_cluster.owner_reply("hgetall", Keys(prefix).partition(part).metrics)
        done = sum(int(v) for k, v in counters.items() if k.startswith("jobs:done:"))
        assert done == per_partition[part], (part, counters)


def test_workers_and_the_api_ride_out_a_whole_cluster_outage(tmp_path: Path) -> None:
    """Every node of the cluster stopped at once (a maintenance restart, a power cut with
    append-only files): the API answers 503 JSON meanwhile, the workers wait (the same
    processes, none exits), and once the cluster is back every job ends done."""
    prefix = f"down-{uuid.uuid4().hex[:6]}"
    with RedisCluster(tmp_path / "cluster", masters=3) as cluster:
        service = Service.launch(
            cluster.url, tmp_path / "data", prefix, concurrency=2,
            IMGSTREAM_REDIS_CLUSTER="true", IMGSTREAM_PARTITIONS="3", IMGSTREAM_LOG_LEVEL="INFO",
        )  # fmt: skip
        try:
            data = encode(photo(64, 48), "png")
            grayscale = '[{"op":"grayscale"}]'

            def submit_all(count: int) -> list[str]:
                ids = []
                for index in range(count):
                    response = service.submit(data, f"{index}.png", operations=grayscale)
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])
                return ids

            before = submit_all(6)
            assert all(service.wait(job_id, 120)["status"] == "done" for job_id in before)
            workers = worker_pids(service.workers.pid)
            assert len(workers) == 2
            for node in cluster.nodes:
                node.stop()
            down = service.submit(data, "down.png", operations=grayscale)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "unavailable"
            status = service.http.get(f"/api/jobs/{before[0]}")
            assert status.status_code == 503 and status.json()["error"]["code"] == "unavailable"
            # The workers met the outage and have waited through five back-offs (3 s or more)
            wait_for_log(service, "retrying in 1.6 s")
            for node in cluster.nodes:
                node.start()
            cluster.wait_until_ok(60)
            after = submit_all(6)
            for job_id in before + after:
                assert service.wait(job_id, 120)["status"] == "done"
            assert worker_pids(service.workers.pid) == workers  # no worker exited
        finally:
            statuses = service.close()
    assert statuses == (0, 0), service.log.read_text()[-3000:]


def wait_for_log(service: Service, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in service.log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.1)
