"""Scaling: drain rate of 1920×1080 resize jobs with 1, 2 and 4 imgstream worker processes.

Jobs are enqueued through ``JobQueue.enqueue``, then ``imgstream worker --concurrency N``
drains them. "Cores busy" is the workers' CPU time over wall time in the measured window:
when it stops growing with N, the CPU is what saturates.
"""

from __future__ import annotations

import json

import images
from context import Context
from measure import Summary
from queues import Drain, Setup, imgstream_system, link_originals, measure
from report import Table

OPERATIONS = json.dumps([{"op": "resize", "width": 800}])
WORKERS = (1, 2, 4)
TARGET = 1.8


def run(ctx: Context) -> list[Table]:
    count = ctx.count(200, 120)
    source = images.hd_jpeg()
    drains: dict[int, list[Drain]] = {workers: [] for workers in WORKERS}
    with ctx.redis("s6") as server:
        assert server.process is not None
        setup = Setup(
            url=server.url,
            redis_pid=server.process.pid,
            data_dir=ctx.scratch / "s6-data",
            operations=OPERATIONS,
            log=ctx.scratch / "s6.log",
        )
        for round_number in range(ctx.rounds):
            shift = round_number % len(WORKERS)
            for workers in WORKERS[shift:] + WORKERS[:shift]:
                ctx.directory("s6-data")
                ids = link_originals(setup.data_dir, source, count)
                system = imgstream_system(server.url, "bench", OPERATIONS, workers)
                drains[workers].append(measure(system, setup, ids))

    one = [drain.drain_rate for drain in drains[1]]
    table = Table(
        key="s6",
        title=f"Scenario 6: scaling, {count} JPEG 1920×1080 → 800 wide, imgstream queue path",
        columns=["worker processes", "drain jobs/s (median, range)",
                 "vs 1 worker, same round (median, range)", "cores busy", "worker CPU ms/job",
                 "others' load, cores"],
    )  # fmt: skip
    ratios: dict[int, Summary] = {}
    for workers, runs in drains.items():
        rate = Summary.of([drain.drain_rate for drain in runs])
        busy = Summary.of([drain.drain_rate * drain.worker_cpu_ms / 1000 for drain in runs])
        ratios[workers] = Summary.of(
            [drain.drain_rate / alone for drain, alone in zip(runs, one, strict=True)]
        )
        table.add(
            workers,
            rate.show(1),
            f"{ratios[workers].median:.2f}× ({ratios[workers].low:.2f}–{ratios[workers].high:.2f})",
            busy.show(2),
            Summary.of([drain.worker_cpu_ms for drain in runs]).show(1),
            Summary.of([drain.other_cores for drain in runs]).show(2),
        )
    scaling = ratios[2]
    table.notes.append(
        f"Target: 2 workers ≥ {TARGET}× one worker — measured in the same round "
        f"{scaling.median:.2f}× (rounds {scaling.low:.2f}–{scaling.high:.2f}): "
        f"{'met' if scaling.median >= TARGET else 'missed'}"
        f"{'' if scaling.low >= TARGET or scaling.median < TARGET else ', not in every round'}."
    )
    table.notes.append(
        "Each ratio divides a round's drain rate by the 1-worker rate of the same round, so "
        "the range shows how much the machine's other load moved it. With 2 cores, 4 workers "
        "cannot beat 2; worker CPU per job staying flat as workers are added means only the "
        "CPU limits the drain."
    )
    table.data = {str(workers): [d.as_json() for d in runs] for workers, runs in drains.items()}
    return [table]
