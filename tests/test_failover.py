"""Failover without loss: with ``IMGSTREAM_REDIS_WAIT_REPLICAS=1`` on a Redis Cluster of 3
masters and 3 replicas, the master holding the deployment is SIGKILLed while jobs are being
uploaded and processed; its replica is promoted by the cluster's own vote (the node timeout
passes, no ``CLUSTER FAILOVER``), and every upload that got its 202 ends done. During the
election the API may answer 503 with Retry-After, never 500; while the promoted master has no
replica left, uploads answer 503 ``replication_lagging`` (queued, but not guaranteed), until
the killed node comes back as its replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imgstream.config import Settings
from imgstream.connection import connect, run_replicated
from imgstream.keys import Keys
from pacing import Uploads, listen_for_final_statuses
from redis_cluster import RedisCluster

from service import Service, wait_for

pytestmark = pytest.mark.slow

NODE_TIMEOUT_MS = 1000
"""How long the cluster waits for a silent master before its replica is elected."""


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """3 masters with a replica each, all ours: the test kills one."""
    with RedisCluster(
        tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS
    ) as cluster:
        yield cluster


def test_wait_replicas_counts_the_scripts_own_writes(replicated_cluster: RedisCluster) -> None:
    """The WAIT after a script, on the script's connection, reports its master's replica; a
    deployment waiting for more replicas than exist hears fewer (and says so, see intake)."""

    async def run() -> tuple[int, int]:
        client = connect(replicated_cluster.url, timeout=5, cluster=True)
        try:
            script = client.register_script("return redis.call('INCR', KEYS[1])")
            key = Keys(f"w-{uuid.uuid4().hex[:6]}").metrics
            count, one = await run_replicated(
                client, script, [key], [], replicas=1, timeout_ms=2000
            )
            assert count == 1
            count, two = await run_replicated(client, script, [key], [], replicas=2, timeout_ms=200)
            assert count == 2
            return one, two
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (1, 1)


def test_settings_refuse_a_wait_longer_than_the_command_timeout() -> None:
    with pytest.raises(ValueError, match="IMGSTREAM_REDIS_WAIT_TIMEOUT"):
        Settings(redis_wait_replicas=1, redis_wait_timeout=3, redis_timeout=2)


def test_a_master_killed_mid_run_loses_no_accepted_job(
    replicated_cluster: RedisCluster, tmp_path: Path
) -> None:
    prefix = f"fo-{uuid.uuid4().hex[:6]}"
    victim = replicated_cluster.master_of(Keys(prefix).stream)
    slots = victim.masters()[victim.port]
    witness = next(n for n in replicated_cluster.nodes if n is not victim)
    service = Service.launch(
        victim.url,  # the node REDIS_URL names is the one that dies: the client must move on
        tmp_path / "data",
        prefix,
        concurrency=2,
        IMGSTREAM_REDIS_CLUSTER="true",
        IMGSTREAM_REDIS_WAIT_REPLICAS="1",
        IMGSTREAM_VISIBILITY_TIMEOUT="1",
        IMGSTREAM_RETRY_BACKOFF="0.05",
        IMGSTREAM_LOG_LEVEL="INFO",
    )
    finals, _, drain = listen_for_final_statuses(witness.url, prefix)
    killed_at = promoted_at = datetime.now(UTC)
    uploads = Uploads(service)
    accepted, refused = uploads.accepted, uploads.refused
    try:
        wait_for(lambda: len(finals) >= 5, "no job ended before the kill")
        wait_for(lambda: len(accepted) > len(finals), "no job was in flight")
        killed_at = datetime.now(UTC)
        victim.kill()
        replicated_cluster.wait_for_promotion(victim, slots, timeout=60)
        promoted_at = datetime.now(UTC)
        lagging = len(refused)
        wait_for(lambda: len(refused) > lagging, "an upload met the master without a replica")
        victim.start()  # back as the replica of its successor, as a restarted pod would be
        before = len(accepted)
        wait_for(lambda: len(accepted) >= before + 20, "uploads were not accepted after failover")
        uploads.finish()
        jobs = {job_id: service.wait(job_id, timeout=90) for job_id in accepted}
        drain()
    finally:
        uploads.finish()
        statuses = service.close()
    log = service.log.read_text()
    assert [job_id for job_id, job in jobs.items() if job["status"] != "done"] == []
    assert {r.status_code for r in refused} <= {503}, [r.text for r in refused]
    assert all(r.headers.get("retry-after") for r in refused)
    assert {r.json()["error"]["code"] for r in refused} <= {"unavailable", "replication_lagging"}
    assert "internal_error" not in log and "Traceback" not in log, log[-3000:]
    assert statuses == (0, 0), log[-3000:]
    # Pub/sub is at most once: a PUBLISH the dying master made in its last moment may never
    # cross the cluster bus. Every other job's end must have been announced.
    unheard = {job_id: jobs[job_id]["finished_at"] for job_id in set(accepted) - set(finals)}
    in_the_gap = {
        job_id: at
        for job_id, at in unheard.items()
        if killed_at - timedelta(seconds=1) <= datetime.fromisoformat(at) <= promoted_at
    }
    assert unheard == in_the_gap, "every job that ended outside the failover was announced"
