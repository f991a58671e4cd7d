"""Redis cost per job: one node vs a 3-master cluster at 1, 3 and 9 partitions.

Each job takes imgstream's own Redis paths (``JobQueue``), without image work, in four
phases measured apart: the API's enqueue script; a worker's read of its partition
(``XREADGROUP``, batches of 16) and the start script; the finish script (status, ack,
counters, expiry, ``PUBLISH``); one status read (``HGETALL``), as a client polling once.
Per phase and per master: ``INFO commandstats`` (µs inside commands), the redis-server
process's CPU from ``/proc`` (also the cluster bus and the pub/sub fan-out), bytes in and
out (``INFO stats``), and memory held per queued and per finished job. On 2 cores the
cluster's throughput cannot grow: what this reports is the cost per node and the spread.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis
from redis.asyncio import Redis

from imgstream.connection import connect
from imgstream.deliveries import ValidDelivery
from imgstream.jobs import ResultInfo, StreamEntry
from imgstream.keys import Keys
from imgstream.queue import JobQueue

from context import Context
from measure import Summary, cpu_seconds
from report import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from redis_cluster import RedisCluster  # type: ignore[import-not-found]

GROUP = "bench-workers"
ENTRY = StreamEntry("", '[{"op":"resize","width":800}]', "jpeg", ())
RESULT = ResultInfo(width=800, height=450, format="jpeg", bytes=61_234)
PHASES = ("enqueue", "read + start", "finish", "status read")
BATCH = 16


@dataclass
class Node:
    port: int
    pid: int

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(port=self.port, decode_responses=True)


@dataclass
class Phase:
    """One phase's cost, summed over masters, and each master's share of the calls."""

    command_us: float = 0.0
    process_us: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    calls_by_node: list[int] = field(default_factory=list)


def snapshot(nodes: list[Node]) -> list[dict[str, Any]]:
    taken = []
    for node in nodes:
        with node.client() as client:
            stats = client.info("stats")
            commands = client.info("commandstats")
        taken.append(
            {
                "cpu": cpu_seconds(node.pid),
                "in": int(stats["total_net_input_bytes"]),
                "out": int(stats["total_net_output_bytes"]),
                "usec": sum(int(v["usec"]) for k, v in commands.items() if k != "info"),
                "calls": sum(int(v["calls"]) for k, v in commands.items() if k != "info"),
            }
        )
    return taken


def difference(before: list[dict[str, Any]], after: list[dict[str, Any]], jobs: int) -> Phase:
    phase = Phase()
    for old, new in zip(before, after, strict=True):
        phase.command_us += (new["usec"] - old["usec"]) / jobs
        phase.process_us += (new["cpu"] - old["cpu"]) * 1e6 / jobs
        phase.bytes_in += (new["in"] - old["in"]) / jobs
        phase.bytes_out += (new["out"] - old["out"]) / jobs
        phase.calls_by_node.append(new["calls"] - old["calls"])
    return phase


async def held_per_job(client: Redis, keys: Keys, partitions: int, ids: list[str]) -> float:
    """Bytes Redis holds per job (``MEMORY USAGE``): a sample of job hashes, plus each
    partition's stream and expiry set shared out over their entries."""
    sample = ids[:: max(1, len(ids) // 50)]
    hashes = [await client.memory_usage(keys.job(job_id)) or 0 for job_id in sample]
    shared = 0
    for part in range(partitions):
        for key in (keys.partition(part).stream, keys.partition(part).expiry):
            shared += await client.memory_usage(key) or 0
    return sum(hashes) / len(hashes) + shared / len(ids)


async def one_round(
    url: str, cluster: bool, nodes: list[Node], partitions: int, jobs: int
) -> dict[str, Any]:
    client: Redis = connect(url, timeout=10, cluster=cluster)
    keys = Keys(f"s7-{secrets.token_hex(3)}")
    # The service's own layout (IMGSTREAM_PARTITIONS): ids spread over the partitions in
    # turn, each partition one hash tag, a worker's read going over every partition.
    queue = JobQueue(client, keys, GROUP, partitions=partitions)
    await queue.ensure_group()
    for _ in range(partitions):  # warm: scripts loaded, connections open to every master
        job_id = queue.new_job_id()
        await queue.enqueue(job_id, StreamEntry(job_id, ENTRY.operations, ENTRY.format, ()))
    while warm := await queue.read("warm", count=BATCH, block_ms=10):
        for delivery in warm:
            await queue.discard(delivery)
    ids = [queue.new_job_id() for _ in range(jobs)]
    phases: dict[str, Phase] = {}
    memory: dict[str, float] = {}
    try:
        before = snapshot(nodes)
        began = time.perf_counter()
        for job_id in ids:
            await queue.enqueue(job_id, StreamEntry(job_id, ENTRY.operations, ENTRY.format, ()))
        enqueue_wall = time.perf_counter() - began
        after = snapshot(nodes)
        phases["enqueue"] = difference(before, after, jobs)
        memory["queued"] = await held_per_job(client, keys, partitions, ids)

        before = after
        taken: list[tuple[ValidDelivery, str]] = []
        while len(taken) < jobs:
            for delivery in await queue.read("w1", count=BATCH, block_ms=0):
                if not isinstance(delivery, ValidDelivery):
                    raise RuntimeError(f"malformed entry: {delivery.problem}")
                lease = secrets.token_hex(8)
                await queue.start(delivery, lease, "w1", 5)
                taken.append((delivery, lease))
        after = snapshot(nodes)
        phases["read + start"] = difference(before, after, jobs)

        before = after
        for delivery, lease in taken:
            assert await queue.complete(delivery, lease, RESULT, ttl=3600)
        after = snapshot(nodes)
        phases["finish"] = difference(before, after, jobs)

        before = after
        for job_id in ids:
            await client.hgetall(keys.job(job_id))
        after = snapshot(nodes)
        phases["status read"] = difference(before, after, jobs)
        memory["finished"] = await held_per_job(client, keys, partitions, ids)
    finally:
        await client.aclose()
    return {"phases": phases, "memory": memory, "enqueue_rate": jobs / enqueue_wall}


def run(ctx: Context) -> list[Table]:
    jobs = ctx.count(3000, 600)
    results: dict[str, list[dict[str, Any]]] = {}
    with ctx.redis("s7") as server, RedisCluster(ctx.directory("s7-cluster")) as cluster:
        assert server.process is not None
        single = [Node(server.port, server.process.pid)]
        masters = [Node(n.port, n.process.pid) for n in cluster.nodes if n.process is not None]
        systems = [
            ("one node, 1 partition", server.url, False, single, 1),
            ("cluster, 1 partition", cluster.url, True, masters, 1),
            ("cluster, 3 partitions", cluster.url, True, masters, 3),
            ("cluster, 9 partitions", cluster.url, True, masters, 9),
        ]
        for round_number in range(ctx.rounds):
            shift = round_number % len(systems)
            for name, url, is_cluster, nodes, partitions in systems[shift:] + systems[:shift]:
                outcome = asyncio.run(one_round(url, is_cluster, nodes, partitions, jobs))
                results.setdefault(name, []).append(outcome)

    cost = Table(
        key="s7",
        title=f"Scenario 7: Redis cost per job, {jobs} jobs, each phase measured apart "
        "(summed over masters; median, range over rounds)",
        columns=["system", "phase", "µs in commands", "redis-server CPU µs", "bytes in",
                 "bytes out", "calls per master (share)"],
    )  # fmt: skip
    for name, runs in results.items():
        for phase in PHASES:
            measured = [run_["phases"][phase] for run_ in runs]
            calls = [
                sum(column) for column in zip(*(m.calls_by_node for m in measured), strict=True)
            ]
            share = "/".join(f"{100 * c / max(1, sum(calls)):.0f}" for c in calls)
            cost.add(
                name,
                phase,
                Summary.of([m.command_us for m in measured]).show(1),
                Summary.of([m.process_us for m in measured]).show(1),
                Summary.of([m.bytes_in for m in measured]).show(0),
                Summary.of([m.bytes_out for m in measured]).show(0),
                f"{share} %",
            )
        total_cpu = Summary.of([sum(r["phases"][p].process_us for p in PHASES) for r in runs])
        queued = Summary.of([r["memory"]["queued"] for r in runs])
        finished = Summary.of([r["memory"]["finished"] for r in runs])
        cost.add(name, "whole job", "", total_cpu.show(1), "", "",
                 f"memory: queued {queued.show(0)} B, finished {finished.show(0)} B")  # fmt: skip
    cost.notes.append(
        "µs in commands is Redis's own accounting (INFO commandstats); redis-server CPU is the "
        "process's user+system time, which adds the event loop, the network, the cluster bus "
        "and forwarding each PUBLISH to every node. Memory (MEMORY USAGE): bytes held per "
        "job while queued (its hash and its share of the stream) and once finished (its hash, "
        "kept for the result TTL, and its share of the expiry set). Partitions are the "
        "service's own (JobQueue with IMGSTREAM_PARTITIONS), one hash tag each; which "
        "master a tag lands on is CRC16's choice, so few partitions spread "
        "unevenly."
    )
    cost.data = {
        name: [
            {
                "phases": {p: r["phases"][p].__dict__ for p in PHASES},
                "memory": r["memory"],
                "enqueue_rate": r["enqueue_rate"],
            }
            for r in runs
        ]
        for name, runs in results.items()
    }
    return [cost]
