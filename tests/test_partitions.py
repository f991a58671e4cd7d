"""Partitions and lanes (``IMGSTREAM_PARTITIONS``, ``IMGSTREAM_STREAM_PER_OPERATION``): one
partition keeps every key of the single-stream layout byte for byte; partitioned jobs spread
over a real 3-master cluster, each script in one slot, dead letters listed and retried
across partitions; a worker serving only some lanes leaves the others' jobs queued."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from imgstream.config import Settings
from imgstream.deadletters import DeadLetters
from imgstream.deliveries import Delivery
from imgstream.deployment import Deployment
from imgstream.fleet_snapshot import Monitor
from imgstream.jobs import StreamEntry, lane_of, new_job_id
from imgstream.keys import Keys, partition_of, partition_of_scope
from imgstream.lifecycle import JobStatus
from imgstream.producer import Once
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer, free_port
from imgstream.steps import OPERATION_NAMES
from redis_cluster import RedisCluster

from images import encode, photo
from inprocess import store_and_enqueue
from service import PNG, service_env, start, stop, wait_for, wait_until_healthy

GRAYSCALE = '[{"op":"grayscale"}]'


def test_a_chain_goes_to_the_lane_of_its_heaviest_step() -> None:
    assert lane_of('[{"op":"resize","width":9},{"op":"blur","sigma":2}]') == "blur"
    assert lane_of('[{"op":"grayscale"},{"op":"crop","width":2,"height":2}]') == "crop"
    assert lane_of('[{"op":"flip"}]') == "flip"
    assert lane_of("not json") == "resize"


def test_partitioned_ids_name_their_partition_and_scopes_pick_one() -> None:
    for part in (0, 1, 2, 0xFFFF):
        job_id = new_job_id(part)
        assert partition_of(job_id) == part and len(job_id) == 32
        assert job_id[12] == "8" and job_id[16] in "89ab"  # RFC 9562 version 8, its variant
    assert partition_of(new_job_id()) == 0
    assert {partition_of_scope(f"scope-{n}", 3) for n in range(30)} == {0, 1, 2}
    assert partition_of_scope("any", 1) == 0


@pytest.mark.anyio
async def test_one_partition_keeps_every_key_byte_for_byte(queue: JobQueue, redis: Redis) -> None:
    prefix = queue.keys.prefix
    await queue.ensure_group()
    job_id = queue.new_job_id("scope")
    assert job_id[12] == "4"  # a plain UUID4, as before partitions existed
    once = Once("scope", "fingerprint", 60)
    entry = StreamEntry(job_id, GRAYSCALE)
    await queue.enqueue(job_id, entry, once=once, callback_url="https://example.com/hook")
    [delivery] = await queue.read("c", count=1, block_ms=100)
    await queue.start(delivery, "lease", "c", 3)
    await queue.fail(delivery, "lease", code="x", message="no", ttl=60, dead_letter=True)
    found = {key async for key in redis.scan_iter(match=f"*{prefix}*")}
    assert found == {
        f"{{{prefix}}}:jobs",
        f"{{{prefix}}}:job:{job_id}",
        f"{{{prefix}}}:metrics",
        f"{{{prefix}}}:idempotency:scope",
        f"{{{prefix}}}:dead",
        f"{{{prefix}}}:expiry",
        f"{{{prefix}}}:webhooks",
    }


@pytest.mark.anyio
async def test_partitions_spread_over_the_masters_and_dead_letters_retry_in_place(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_cluster.url,
        redis_cluster=True,
        partitions=3,
        data_dir=tmp_path / "data",
        key_prefix=redis_cluster.spread_prefix(3),
    )
    deployment = Deployment.open(settings)
    queue, storage = deployment.queue, deployment.storage
    try:
        original = encode(photo(40, 30), "png")
        ids = [await store_and_enqueue(queue, storage, GRAYSCALE, original) for _ in range(3)]
        assert sorted(partition_of(job_id) for job_id in ids) == [0, 1, 2]  # one each, in turn
        for job_id in ids:  # each job's hash is on the master of its own partition's stream
            part = Keys(settings.key_prefix).partition(partition_of(job_id))
            assert redis_cluster.owner_reply("xlen", part.stream) == 1
            assert redis_cluster.owner_reply("exists", part.job(job_id)) == 1
        deliveries = await queue.read("doomed", count=10, block_ms=100)
        assert sorted(delivery.job_id or "" for delivery in deliveries) == sorted(ids)
        for delivery in deliveries:
            await queue.start(delivery, "lease", "doomed", 1)
            await queue.fail(delivery, "lease", code="x", message="no", ttl=60, dead_letter=True)

        letters = deployment.dead_letters
        assert await letters.count() == 3
        listed = await letters.list()
        assert sorted(letter.job_id for letter in listed) == sorted(ids)
        snapshot = await Monitor.of(deployment).snapshot()
        assert snapshot.partition_dead_letters == [1, 1, 1] and snapshot.dead_letters == 3
        assert snapshot.counters.total("failed") == 3

        for letter in listed:
            assert await letters.retry(letter.entry_id) is not None
        assert await letters.count() == 0
        snapshot = await Monitor.of(deployment).snapshot()
        assert [figures.backlog for figures in snapshot.streams] == [1, 1, 1]
        assert snapshot.counters.total("failed") == 0
        for job_id in ids:
            record = await queue.get_job(job_id)
            assert record is not None and record.status is JobStatus.QUEUED
        assert await DeadLetters(deployment.redis, deployment.keys, partitions=3).purge() == 0
    finally:
        await deployment.aclose()


def test_a_worker_serves_only_its_lanes(redis_server: RedisServer, tmp_path: Path) -> None:
    url = redis_server.url
    port, prefix = free_port(), f"lanes-{uuid.uuid4().hex[:8]}"
    env = service_env(
        url,
        tmp_path / "data",
        prefix,
        IMGSTREAM_PORT=str(port),
        IMGSTREAM_STREAM_PER_OPERATION="true",
    )
    (tmp_path / "data").mkdir()
    log = tmp_path / "lanes.log"
    api = start(["api"], env, log)
    resizer = start(["worker", "--concurrency", "1", "--operations", "resize"], env, log)
    blurrer = None
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    blur_lane = Keys(prefix).lane("blur")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, api)
        with httpx.Client(base_url=base, timeout=30) as http:

            def submit(operations: str) -> str:
                answer = http.post(
                    "/api/jobs", files={"image": ("a.png", PNG)}, data={"operations": operations}
                )
                assert answer.status_code == 202, answer.text
                return str(answer.json()["id"])

            def status(job_id: str) -> str:
                return str(http.get(f"/api/jobs/{job_id}").json()["status"])

            blurred = submit('[{"op":"resize","width":16},{"op":"blur","sigma":1}]')
            resized = submit('[{"op":"resize","width":16}]')
            wait_for(
                lambda: status(resized) == "done",
                f"resize job {resized}; {log.read_text()[-2000:]}",
            )
            assert status(blurred) == "queued"
            assert client.xlen(blur_lane) == 1
            assert client.xinfo_consumers(blur_lane, Settings().group) == []  # never read

            stats = http.get("/api/stats").json()
            by_lane = {figures["operation"]: figures for figures in stats["streams"]}
            assert by_lane["blur"]["waiting"] == 1 and by_lane["resize"]["backlog"] == 0
            metrics = http.get("/metrics").text
            assert 'imgstream_stream_waiting{lane="blur",partition="0"} 1.0' in metrics

            blurrer = start(["worker", "--concurrency", "1", "--operations", "blur"], env, log)
            wait_for(
                lambda: status(blurred) == "done", f"blur job {blurred}; {log.read_text()[-2000:]}"
            )
    finally:
        client.close()
        codes = [stop(process) for process in (api, resizer, *([blurrer] if blurrer else []))]
    assert codes == [0] * len(codes), log.read_text()[-3000:]


def test_operations_without_lanes_are_refused(redis_server: RedisServer, tmp_path: Path) -> None:
    env = service_env(redis_server.url, tmp_path / "data", "refused")
    log = tmp_path / "refused.log"
    process = start(["worker", "--operations", "blur"], env, log)
    assert process.wait(60) == 2
    assert "IMGSTREAM_STREAM_PER_OPERATION" in log.read_text()


@pytest.mark.anyio
async def test_an_idle_consumer_reads_each_partition_once_not_each_lane(
    redis: Redis, settings: Settings
) -> None:
    """3 partitions x every lane: once a sweep of every lane found nothing, an idle read is
    one XREADGROUP per partition plus one blocking read, and a job queued in any lane of any
    partition is still found by the next read."""
    lanes = OPERATION_NAMES
    queue = JobQueue(redis, Keys(settings.key_prefix), "g", partitions=3, lanes=lanes)
    await queue.ensure_group()

    async def reads_of_one_call() -> tuple[int, list[Delivery]]:
        before = (await redis.info("commandstats")).get("cmdstat_xreadgroup", {}).get("calls", 0)
        found = await queue.read("c", count=16, block_ms=30)
        after = (await redis.info("commandstats"))["cmdstat_xreadgroup"]["calls"]
        return after - before, found

    busy, found = await reads_of_one_call()  # not yet idle: a read of every lane, then a wait
    assert (busy, found) == (3 * len(lanes) + 1, [])
    for _ in range(3):
        idle, found = await reads_of_one_call()
        assert (idle, found) == (3 + 1, [])
    job_id = new_job_id(2)
    await queue.enqueue(job_id, StreamEntry(job_id, '[{"op":"blur","sigma":1}]'))
    _, found = await reads_of_one_call()
    assert [delivery.ref.stream for delivery in found] == [
        Keys(settings.key_prefix, 2).lane("blur")
    ]
    busy, found = await reads_of_one_call()  # after work, every lane is read again
    assert (busy, found) == (3 * len(lanes) + 1, [])
