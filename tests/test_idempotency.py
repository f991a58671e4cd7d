"""Idempotency keys on ``POST /api/jobs``, in-process against a real Redis and a real worker."""

from __future__ import annotations

import hashlib

import anyio
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage

from images import encode, photo
from inprocess import assert_error, client_for, drain

pytestmark = pytest.mark.anyio

JPEG = encode(photo(64, 48), "jpeg")
OTHER = encode(photo(48, 64), "jpeg")
KEY_A = "a" * 24
KEY_B = "b" * 24


async def post(
    client: httpx.AsyncClient, key: str, data: bytes = JPEG, width: str = "32", **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/jobs",
        files={"image": ("photo.jpg", data)},
        data={"operation": "resize", "width": width},
        headers={"Idempotency-Key": key, **headers},
    )


def originals(settings: Settings) -> list[str]:
    return sorted(path.name for path in LocalStorage(settings.data_dir).originals.iterdir())


async def test_concurrent_posts_with_one_key_make_one_job(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await post(client, "order-17-avatar"))

    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(send)
    assert {answer.status_code for answer in answers} == {202}, [a.text for a in answers]
    ids = {answer.json()["id"] for answer in answers}
    assert len(ids) == 1
    assert await queue.backlog() == 1
    assert originals(settings) == [hashlib.sha256(JPEG).hexdigest()]  # stored once
    replayed = [answer for answer in answers if answer.headers.get("idempotent-replayed")]
    assert len(replayed) == 7


async def test_a_repeat_after_the_job_is_done_returns_it(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue, redis: Redis
) -> None:
    first = await post(client, "k-1")
    assert first.status_code == 202, first.text
    await drain(settings, queue)
    again = await post(client, "k-1")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "done"
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await queue.backlog() == 0
    assert len(originals(settings)) == 1
    (record,) = await redis.keys(Keys(settings.key_prefix).idempotency("*"))
    assert 0 < await redis.ttl(record) <= settings.idempotency_ttl


async def test_the_same_key_for_another_request_is_a_conflict(client: httpx.AsyncClient) -> None:
    assert (await post(client, "k-2")).status_code == 202
    assert_error(await post(client, "k-2", width="16"), 409, "idempotency_conflict")
    assert_error(await post(client, "k-2", data=OTHER), 409, "idempotency_conflict")


async def test_without_a_key_every_post_is_a_new_job(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/api/jobs", files={"image": ("a.jpg", JPEG)}, data={"operation": "grayscale"}
    )
    second = await client.post(
        "/api/jobs", files={"image": ("a.jpg", JPEG)}, data={"operation": "grayscale"}
    )
    assert first.json()["id"] != second.json()["id"]


async def test_a_malformed_key_is_refused(client: httpx.AsyncClient) -> None:
    for bad in (b"", b"x" * 256, b"tab\there", "é".encode()):
        response = await client.post(
            "/api/jobs",
            files={"image": ("a.jpg", JPEG)},
            headers={"Idempotency-Key": bad},
        )
        assert_error(response, 422, "invalid_request")


async def test_two_api_keys_never_share_an_idempotency_key(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": (SecretStr(KEY_A), SecretStr(KEY_B))})
    async with client_for(create_app(keyed)) as client:
        a = await post(client, "shared", Authorization=f"Bearer {KEY_A}")
        b = await post(client, "shared", Authorization=f"Bearer {KEY_B}", width="16")
        assert a.status_code == b.status_code == 202, (a.text, b.text)
        assert a.json()["id"] != b.json()["id"]
        assert (
            await client.get(a.headers["location"], headers={"Authorization": f"Bearer {KEY_B}"})
        ).status_code == 404
