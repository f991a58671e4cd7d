"""Metrics: label rules and decoding (pure), fleet counters as real jobs run (in-process and
with real API and worker processes), HTTP metrics, and jobs followed through the JSON logs."""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.fleet_snapshot import Monitor
from imgstream.job_counters import (
    PROCESSING_BUCKETS,
    Counters,
    bucket_bound,
    operation_label,
)
from imgstream.jobs import new_job_id
from imgstream.prometheus import exposition
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer, free_port
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import client_for, store_and_enqueue
from service import Service

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (parsed by prometheus-client)."""
    parsed: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(parsed: Samples, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


# Pure.


@pytest.mark.parametrize(
    ("operations", "label"),
    [
        ('[{"op":"resize","width":3}]', "resize"),
        ('[{"op":"resize","width":3},{"op":"blur"},{"op":"resize","width":2}]', "blur+resize"),
        ('[{"op":"grayscale"},{"op":"blur"},{"op":"resize","width":1}]', "blur+grayscale+resize"),
        ('[{"op":"explode"}]', "invalid"),
        ("[]", "invalid"),
        ("not json", "invalid"),
        ('{"op":"blur"}', "invalid"),
    ],
)
def test_operation_label_is_the_sorted_set_of_step_kinds(operations: str, label: str) -> None:
    assert operation_label(operations) == label


def test_histogram_fields_decode_and_accumulate() -> None:
    assert bucket_bound(0.05, PROCESSING_BUCKETS) == "0.05"
    assert bucket_bound(0.051, PROCESSING_BUCKETS) == "0.1"
    assert bucket_bound(1e9, PROCESSING_BUCKETS) == "+Inf"
    counters = Counters.from_hash(
        {
            "submitted:resize": "3",
            "jobs:done:resize": "2",
            "jobs:failed:invalid": "1",
            "processing:resize:bucket:0.1": "1",
            "processing:resize:bucket:2.5": "1",
            "processing:resize:sum": "1.5",
            "processing:resize:count": "2",
            "e2e:bucket:+Inf": "1",
            "e2e:count": "1",
            "e2e:sum": "4000",
            "jobs:done:resize:extra": "9",  # not ours: ignored
        }
    )
    assert counters.submitted == {"resize": 3}
    assert counters.total("done") == 2 and counters.total("failed") == 1
    cumulative = dict(counters.processing["resize"].cumulative(PROCESSING_BUCKETS))
    assert cumulative["0.05"] == 0 and cumulative["0.1"] == 1 and cumulative["+Inf"] == 2
    assert counters.end_to_end.count == 1 and math.isclose(counters.end_to_end.sum, 4000)


# In-process, real Redis.

pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_outcomes_and_durations_are_counted_once(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    storage = LocalStorage(settings.data_dir)
    good = encode(photo(40, 30), "png")
    for _ in range(2):
        await store_and_enqueue(queue, storage, '[{"op":"resize","width":10}]', good)
    bad = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', b"not an image")
    monitor = Monitor(redis, queue.keys, queue.group, live_within=30)
    before = samples(exposition(await monitor.snapshot(), CollectorRegistry()).decode())
    assert value(before, "imgstream_jobs_total", status="done", operation="resize") == 0

    await Worker(settings, queue, storage).run(burst=True)
    await Worker(settings, queue, storage).run(burst=True)  # nothing left: counts nothing

    snapshot = await monitor.snapshot()
    after = samples(exposition(snapshot, CollectorRegistry()).decode())
    assert value(after, "imgstream_jobs_total", status="done", operation="resize") == 2
    assert value(after, "imgstream_jobs_total", status="failed", operation="grayscale") == 1
    assert value(after, "imgstream_job_processing_seconds_count", operation="resize") == 2
    assert value(after, "imgstream_job_processing_seconds_count", operation="grayscale") == 1
    assert value(after, "imgstream_job_end_to_end_seconds_count") == 2
    assert value(after, "imgstream_job_end_to_end_seconds_bucket", le="+Inf") == 2
    assert value(after, "imgstream_queue_backlog") == 0
    assert value(after, "imgstream_redis_up") == 1
    [failure] = snapshot.failures
    assert failure.job == bad and failure.error_code == "unsupported_format" and failure.error
    assert snapshot.rates is not None
    assert sum(snapshot.rates.done) == 2 and sum(snapshot.rates.failed) == 1


class FailingStorage(LocalStorage):
    """Local storage whose result writes fail while ``broken``, like a failing disk."""

    broken = True

    def save_result(self, job_id: str, data: bytes, extension: str) -> Path:
        if self.broken:
            raise OSError(5, "Input/output error")  # a full disk (28) is waited out instead
        return super().save_result(job_id, data, extension)


@pytest_anyio
async def test_a_job_has_one_final_outcome_and_the_counts_add_up(
    queue: JobQueue, redis: Redis, settings: Settings
) -> None:
    """Failed, dead-lettered, retried through the API, done: it counts once, as done."""
    once = settings.model_copy(update={"max_attempts": 1})
    storage = FailingStorage(once.data_dir)
    good = encode(photo(40, 30), "png")
    retried = await store_and_enqueue(queue, storage, '[{"op":"grayscale"}]', good)
    await store_and_enqueue(
        queue, storage, '[{"op":"grayscale"}]', b"not an image"
    )  # fails for good
    raw = new_job_id()  # a producer's bare XADD counts as submitted when a worker takes it up
    storage.save_original(raw, io.BytesIO(good))
    await redis.xadd(queue.keys.stream, {"job": raw, "operations": '[{"op":"grayscale"}]'})
    await Worker(once, queue, storage).run(burst=True)

    async with client_for(create_app(once)) as client:
        failed = (await client.get("/api/stats")).json()
        assert failed["jobs"] | {"by_operation": None, "mean_end_to_end_seconds": None} == {
            "submitted": 3, "done": 0, "failed": 3, "cache_hits": 0,
            "by_operation": None, "mean_end_to_end_seconds": None,
        }  # fmt: skip
        letters = {letter["job_id"]: letter["entry_id"] for letter in failed["dead_letters"]}
        assert set(letters) == {retried, raw}
        storage.broken = False
        for job_id in (retried, raw):
            answer = await client.post(f"/api/dead-letters/{letters[job_id]}/retry")
            assert answer.status_code == 202, answer.text
        await Worker(once, queue, storage).run(burst=True)
        stats = (await client.get("/api/stats")).json()
        scrape = (await client.get("/metrics")).text

    jobs = stats["jobs"]
    assert (jobs["submitted"], jobs["done"], jobs["failed"]) == (3, 2, 1)
    assert jobs["submitted"] == jobs["done"] + jobs["failed"] + stats["queue"]["backlog"]
    assert jobs["by_operation"]["grayscale"] | {"mean_processing_seconds": None} == {
        "submitted": 3, "done": 2, "failed": 1, "mean_processing_seconds": None,
    }  # fmt: skip
    exposed = samples(scrape)
    assert value(exposed, "imgstream_jobs_total", status="done", operation="grayscale") == 2
    assert value(exposed, "imgstream_jobs_total", status="failed", operation="grayscale") == 1
    assert value(exposed, "imgstream_jobs_submitted_total", operation="grayscale") == 3


@pytest_anyio
async def test_http_requests_are_counted_by_route_template(settings: Settings) -> None:
    job_id = new_job_id()
    async with client_for(create_app(settings)) as client:
        assert (await client.get(f"/api/jobs/{job_id}")).status_code == 404
        assert (await client.get("/no/such/page")).status_code == 404
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert job_id not in response.text
    parsed = samples(response.text)
    requests = "imgstream_http_requests_total"
    assert value(parsed, requests, route="/api/jobs/{job_id}", method="GET", status="404") == 1
    assert value(parsed, requests, route="<unmatched>", method="GET", status="404") == 1
    duration = "imgstream_http_request_duration_seconds_count"
    assert value(parsed, duration, route="/api/jobs/{job_id}", method="GET") == 1


@pytest_anyio
async def test_metrics_still_answer_while_redis_is_unreachable(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with client_for(create_app(nowhere)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert value(samples(response.text), "imgstream_redis_up") == 0


# Real API and worker processes.


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    running = Service.launch(
        redis_server.url,
        tmp_path_factory.mktemp("metrics") / "data",
        f"met-{uuid.uuid4().hex[:8]}",
        concurrency=2,
        IMGSTREAM_LOG_LEVEL="INFO",
        IMGSTREAM_JANITOR_INTERVAL="1",
    )
    yield running
    assert running.close() == (0, 0), running.log.read_text()[-3000:]


def scrape(service: Service) -> Samples:
    response = service.http.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


@pytest.mark.slow
def test_metrics_change_as_real_jobs_run(service: Service, redis_server: RedisServer) -> None:
    before = scrape(service)
    image = encode(photo(120, 80), "jpeg")
    accepted = [service.submit(image, operation="resize", width="40") for _ in range(2)]
    assert all(response.status_code == 202 for response in accepted)
    missing = uuid.uuid4().hex  # queued by a plain XADD with no stored original: it fails
    raw = redis.Redis.from_url(redis_server.url)
    raw.xadd(f"{{{service.prefix}}}:jobs", {"job": missing, "operations": '[{"op":"blur"}]'})
    raw.close()
    jobs = [service.wait(response.json()["id"]) for response in accepted]
    assert [job["status"] for job in jobs] == ["done", "done"]
    assert service.wait(missing)["error_code"] == "original_missing"
    after = scrape(service)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("imgstream_jobs_submitted_total", operation="resize") == 2
    assert delta("imgstream_jobs_total", status="done", operation="resize") == 2
    assert delta("imgstream_jobs_total", status="failed", operation="blur") == 1
    assert delta("imgstream_job_processing_seconds_count", operation="resize") == 2
    assert delta("imgstream_job_processing_seconds_sum", operation="resize") > 0
    assert delta("imgstream_job_end_to_end_seconds_count") == 2
    assert (
        delta("imgstream_http_requests_total", route="/api/jobs", method="POST", status="202") == 2
    )
    assert delta("imgstream_http_requests_total", route="/api/jobs/{job_id}", method="GET") == 0
    assert any(
        name == "imgstream_http_requests_total"
        and dict(labels).get("route") == "/api/jobs/{job_id}"
        for name, labels in after
    )
    deadline = time.monotonic() + 30  # both worker processes send heartbeats once started
    while value(after, "imgstream_consumers") != 2:
        assert time.monotonic() < deadline, service.log.read_text()[-3000:]
        time.sleep(0.2)
        after = scrape(service)
    assert value(after, "imgstream_queue_backlog") == 0
    assert value(after, "imgstream_queue_pending") == 0
    for name, labels in after:
        assert not any(job["id"] in label for _, label in labels for job in jobs), name


@pytest.mark.slow
def test_a_job_can_be_followed_by_its_id_through_the_logs(service: Service) -> None:
    response = service.submit(encode(photo(60, 40), "png"), operation="grayscale")
    job_id = response.json()["id"]
    assert service.wait(job_id)["status"] == "done"
    deadline = time.monotonic() + 5
    while True:
        events = [
            line for line in map(json.loads, _json_lines(service.log)) if line.get("job") == job_id
        ]
        if any(line.get("event") == "job.finished" for line in events) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)
    by_event = {line["event"]: line for line in events}
    # The API logs after its 202 is settled; a quick worker may log first, so no order here.
    assert set(by_event) == {"job.accepted", "job.started", "job.finished"}
    accepted, started, finished = (
        by_event[name] for name in ("job.accepted", "job.started", "job.finished")
    )
    assert accepted["logger"] == "imgstream.api" and accepted["operation"] == "grayscale"
    assert started["consumer"] == finished["consumer"] and started["attempt"] == 1
    assert accepted["pid"] != finished["pid"]
    assert finished["outcome"] == "done" and finished["duration_s"] > 0
    assert finished["operation"] == "grayscale"


def _json_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("{")]
