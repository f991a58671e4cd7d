"""Batches: several images with one set of steps, in-process against a real Redis, a real
worker and real pixels (the ZIP's entries are decoded and compared with the jobs' results)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.deployment import open_storage
from imgstream.janitor import sweep_once
from imgstream.queue import JobQueue, Keys
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import decode, encode, flat, photo
from inprocess import assert_error, client_for, drain

pytestmark = pytest.mark.anyio

SMALL = encode(flat(16, 16, [200, 30, 30]), "png")
"""Fits in ``FITS`` bytes as a JPEG."""
NOISY = encode(photo(400, 300), "png")
"""Over ``FITS`` bytes as a JPEG even at quality 1: its job fails (``max_bytes_unreachable``)."""
FITS = "1500"
KEY_A = "a" * 24
KEY_B = "b" * 24


def images(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("image", (name, data)) for name, data in named]


THREE = images(
    ("red.png", SMALL),
    ("photo.png", encode(photo(64, 48), "png")),
    ("red.png", encode(flat(20, 10, [10, 200, 10]), "png")),
)


async def post_batch(
    client: httpx.AsyncClient,
    files: list[tuple[str, tuple[str, bytes]]],
    data: dict[str, str] | None = None,
    **headers: str,
) -> httpx.Response:
    return await client.post(
        "/api/batches", files=files, data=data or {"operation": "grayscale"}, headers=headers
    )


def originals(settings: Settings) -> list[str]:
    return sorted(path.name for path in LocalStorage(settings.data_dir).originals.iterdir())


async def test_a_batch_of_three_returns_a_zip_of_three(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    accepted = await post_batch(client, THREE)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "processing" and len(body["jobs"]) == 3
    assert accepted.headers["location"] == body["links"]["self"] == f"/api/batches/{body['id']}"
    assert [job["status"] for job in body["jobs"]] == ["queued"] * 3
    assert await queue.backlog() == 3
    not_yet = await client.get(body["links"]["result"])
    assert_error(not_yet, 409, "not_ready")

    await drain(settings, queue)
    batch = (await client.get(body["links"]["self"])).json()
    assert batch["status"] == "done" and batch["total"] == 3
    assert batch["counts"] == {"queued": 0, "processing": 0, "done": 3, "failed": 0, "expired": 0}
    assert [job["id"] for job in batch["jobs"]] == [job["id"] for job in body["jobs"]]

    download = await client.get(body["links"]["result"])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert archive.testzip() is None
    assert archive.namelist() == ["red.png", "photo.png", "red-2.png"]  # upload order, unique
    for name, job in zip(archive.namelist(), batch["jobs"], strict=True):
        result = await client.get(job["links"]["result"])
        entry = archive.read(name)
        assert entry == result.content
        pixels = decode(entry)
        assert (pixels.width, pixels.height) == (job["result"]["width"], job["result"]["height"])
        assert pixels.bands == 1  # grayscale, as asked
    again = await client.get(body["links"]["result"])
    assert zipfile.ZipFile(io.BytesIO(again.content)).namelist() == archive.namelist()


async def test_one_failed_job_makes_the_batch_partial_and_the_zip_holds_the_rest(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    files = images(("a.png", SMALL), ("noisy.png", NOISY), ("b.png", SMALL))
    fields = {"operation": "grayscale", "format": "jpeg", "max_bytes": FITS}
    accepted = await post_batch(client, files, fields)
    assert accepted.status_code == 202, accepted.text
    await drain(settings, queue)
    batch = (await client.get(accepted.json()["links"]["self"])).json()
    assert batch["status"] == "partial"
    assert (batch["counts"]["done"], batch["counts"]["failed"]) == (2, 1)
    assert batch["jobs"][1]["error_code"] == "max_bytes_unreachable"
    download = await client.get(batch["links"]["result"])
    assert zipfile.ZipFile(io.BytesIO(download.content)).namelist() == ["a.jpg", "b.jpg"]


async def test_a_batch_whose_every_job_failed_is_failed_with_no_zip(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    fields = {"operation": "grayscale", "format": "jpeg", "max_bytes": FITS}
    accepted = await post_batch(client, images(("noisy.png", NOISY)), fields)
    await drain(settings, queue)
    batch = (await client.get(accepted.json()["links"]["self"])).json()
    assert batch["status"] == "failed"
    assert_error(await client.get(batch["links"]["result"]), 409, "batch_failed")


async def test_one_bad_part_refuses_the_batch_and_leaves_nothing(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    files = images(("a.png", SMALL), ("notes.png", b"not an image at all"), ("b.png", SMALL))
    refused = await post_batch(client, files)
    message = assert_error(refused, 415)
    assert message.startswith("image 2 (notes.png): ")
    assert originals(settings) == []
    assert await queue.backlog() == 0
    bad_step = await post_batch(client, THREE, {"operation": "resize"})
    assert_error(bad_step, 422, "invalid_parameters")
    assert originals(settings) == [] and await queue.backlog() == 0


async def test_too_many_files_is_refused(settings: Settings) -> None:
    limited = settings.model_copy(update={"batch_max_files": 2})
    async with client_for(create_app(limited)) as client:
        assert_error(await post_batch(client, THREE), 413, "too_many_files")
        many = images(*[(f"{n}.png", SMALL) for n in range(6)])
        assert_error(await post_batch(client, many), 413, "too_many_files")
        assert (await post_batch(client, THREE[:2])).status_code == 202
    assert len(originals(settings)) == 2


async def test_a_body_over_the_batch_size_limit_is_refused(settings: Settings) -> None:
    limited = settings.model_copy(update={"batch_max_bytes": 4096})
    async with client_for(create_app(limited)) as client:
        refused = await post_batch(client, images(("noisy.png", NOISY)))
        assert "IMGSTREAM_BATCH_MAX_BYTES" in assert_error(refused, 413, "too_large")


async def test_no_image_is_refused(client: httpx.AsyncClient) -> None:
    refused = await client.post("/api/batches", data={"operation": "grayscale"})
    assert assert_error(refused, 422, "invalid_request").startswith("image: required")


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    keys = (SecretStr(KEY_A), SecretStr(KEY_B))
    async with client_for(create_app(settings.model_copy(update={"api_keys": keys}))) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_batch_is_readable_only_by_the_key_that_made_it(
    keyed: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    accepted = await post_batch(keyed, THREE, **bearer(KEY_A))
    assert accepted.status_code == 202, accepted.text
    links = accepted.json()["links"]
    await drain(settings, queue)
    assert (await keyed.get(links["self"], headers=bearer(KEY_A))).json()["status"] == "done"
    for path in (links["self"], links["result"], links["events"]):
        assert_error(await keyed.get(path, headers=bearer(KEY_B)), 404, "not_found")
        assert_error(await keyed.get(path), 401)
    ok = await keyed.get(links["result"], headers=bearer(KEY_A))
    assert len(zipfile.ZipFile(io.BytesIO(ok.content)).namelist()) == 3


async def test_an_idempotency_key_makes_one_batch(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await post_batch(client, THREE, **{"Idempotency-Key": "order-9"}))

    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(send)
    accepted = [a for a in answers if a.status_code == 202]
    for answer in answers:
        if answer.status_code != 202:
            assert_error(answer, 409, "idempotency_in_progress")
    assert len({a.json()["id"] for a in accepted}) == 1
    assert await queue.backlog() == 3
    assert len(originals(settings)) == 3

    await drain(settings, queue)
    again = await post_batch(client, THREE, **{"Idempotency-Key": "order-9"})
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    body: dict[str, Any] = again.json()
    assert body["id"] == accepted[0].json()["id"] and body["status"] == "done"
    assert [job["status"] for job in body["jobs"]] == ["done"] * 3
    other = await post_batch(client, THREE[:2], **{"Idempotency-Key": "order-9"})
    assert_error(other, 409, "idempotency_conflict")
    assert len(originals(settings)) == 3


async def test_a_batch_lives_as_long_as_its_jobs(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue, redis: Any
) -> None:
    accepted = await post_batch(client, THREE[:1])
    batch_id = accepted.json()["id"]
    key = Keys(settings.key_prefix).batch(batch_id)
    assert 0 < await redis.ttl(key) <= settings.result_ttl
    await drain(settings, queue)
    assert (await client.get(f"/api/batches/{batch_id}")).status_code == 200
    job_key = Keys(settings.key_prefix).job(accepted.json()["jobs"][0]["id"])
    assert abs(await redis.ttl(key) - await redis.ttl(job_key)) <= 2
    await redis.delete(job_key)  # as when its result TTL passes
    assert_error(await client.get(f"/api/batches/{batch_id}"), 404, "not_found")
    assert not await redis.exists(key)


async def test_the_zip_streams_from_s3_also_when_downloads_are_presigned(
    s3_settings: Settings, queue: JobQueue
) -> None:
    presigned = s3_settings.model_copy(update={"s3_presign": True, "s3_presign_ttl": 60})
    async with client_for(create_app(presigned)) as client:
        accepted = await post_batch(client, THREE)
        assert accepted.status_code == 202, accepted.text
        await Worker(presigned, queue, open_storage(presigned)).run(burst=True)
        batch = (await client.get(accepted.json()["links"]["self"])).json()
        assert batch["status"] == "done"
        download = await client.get(batch["links"]["result"])
        assert download.status_code == 200, download.text
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        async with httpx.AsyncClient() as bucket:
            for name, job in zip(archive.namelist(), batch["jobs"], strict=True):
                redirect = await client.get(job["links"]["result"])
                assert redirect.status_code == 307  # single results go to the bucket directly
                direct = await bucket.get(redirect.headers["location"])
                assert archive.read(name) == direct.content
    assert not any(path.is_file() for path in s3_settings.data_dir.rglob("*"))


async def test_a_batch_draws_a_token_per_image_from_the_rate_limit(
    settings: Settings, queue: JobQueue
) -> None:
    tight = settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 4})
    async with client_for(create_app(tight)) as client:
        assert (await post_batch(client, THREE)).status_code == 202  # 3 of the 4 tokens
        refused = await post_batch(client, THREE[:2])
        assert "counts as 2 uploads" in assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
    assert await queue.backlog() == 3 and len(originals(settings)) == 3


async def test_a_batch_lives_as_long_as_its_jobs_even_when_nobody_reads_it(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue, redis: Redis
) -> None:
    accepted = await post_batch(client, THREE)
    batch_id = accepted.json()["id"]
    key = queue.keys.batch(batch_id)
    assert await redis.sismember(queue.keys.open_batches, batch_id)
    # Its jobs wait in a backlog (no worker) until the batch's first TTL is nearly over:
    # a sweep gives it another result TTL, as long as one of its jobs has not ended.
    await redis.expire(key, 2)
    sweep = await sweep_once(settings)
    assert sweep is not None and sweep.open_batches == 1
    assert await redis.ttl(key) > settings.result_ttl - 60
    await drain(settings, queue)
    # Once every job has ended, the batch lives until the last one's record expires, and the
    # janitor stops looking at it.
    await redis.expire(key, 2)
    sweep = await sweep_once(settings)
    assert sweep is not None and sweep.open_batches == 0
    assert not await redis.sismember(queue.keys.open_batches, batch_id)
    job_ttls = [await redis.ttl(queue.keys.job(job["id"])) for job in accepted.json()["jobs"]]
    assert abs(await redis.ttl(key) - max(job_ttls)) <= 2
    batch = await client.get(f"/api/batches/{batch_id}")
    assert batch.status_code == 200 and batch.json()["status"] == "done"
