"""Results as HTTP caches see them (a strong ``ETag``, ``Cache-Control: immutable`` for the
time left, ``304`` on ``If-None-Match``), in-process against a real Redis, real workers and,
for S3, a real SeaweedFS."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from pydantic import SecretStr

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.content import content_key
from imgstream.operations import Limits, spec_from_form
from imgstream.queue import JobQueue
from imgstream.s3_storage import S3Storage
from imgstream.storage import LocalStorage, Storage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import client_for

pytestmark = pytest.mark.anyio

JPEG = encode(photo(64, 48), "jpeg")
FIELDS = {"operation": "resize", "width": "32"}
KEY = "k" * 24
_MAX_AGE = re.compile(r"^(public|private), max-age=(\d+), immutable$")


async def finished_job(
    client: httpx.AsyncClient,
    settings: Settings,
    queue: JobQueue,
    storage: Storage,
    **headers: str,
) -> str:
    """A job of ``JPEG`` and ``FIELDS``, accepted and run to ``done``; its result's URL."""
    accepted = await client.post(
        "/api/jobs", files={"image": ("a.jpg", JPEG)}, data=FIELDS, headers=headers
    )
    assert accepted.status_code == 202, accepted.text
    await Worker(settings, queue, storage).run(burst=True)
    job = (await client.get(accepted.headers["location"], headers=headers)).json()
    assert job["status"] == "done", job
    return f"{accepted.headers['location']}/result"


def expected_etag() -> str:
    spec = spec_from_form(FIELDS, Limits())
    return f'"{content_key(hashlib.sha256(JPEG).hexdigest(), spec)}"'


def cache_control(response: httpx.Response, settings: Settings) -> str:
    match = _MAX_AGE.fullmatch(response.headers["cache-control"])
    assert match is not None, response.headers["cache-control"]
    assert 0 < int(match[2]) <= settings.result_ttl
    return match[1]


async def test_a_result_is_immutable_with_a_strong_etag_and_revalidates(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    url = await finished_job(client, settings, queue, LocalStorage(settings.data_dir))
    first = await client.get(url)
    assert first.status_code == 200
    assert first.headers["etag"] == expected_etag()
    assert cache_control(first, settings) == "public"
    tag = first.headers["etag"]
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = await client.get(url, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag
        assert cache_control(again, settings) == "public"
    head = await client.head(url, headers={"If-None-Match": tag})
    assert head.status_code == 304
    changed = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == first.content


async def test_with_api_keys_a_result_is_private(settings: Settings, queue: JobQueue) -> None:
    keyed = settings.model_copy(update={"api_keys": (SecretStr(KEY),)})
    auth = {"Authorization": f"Bearer {KEY}"}
    async with client_for(create_app(keyed)) as client:
        url = await finished_job(client, keyed, queue, LocalStorage(settings.data_dir), **auth)
        response = await client.get(url, headers=auth)
        assert response.status_code == 200
        assert cache_control(response, keyed) == "private"
        tag = response.headers["etag"]
        assert (await client.get(url, headers={**auth, "If-None-Match": tag})).status_code == 304
        assert (await client.get(url, headers={"If-None-Match": tag})).status_code == 401


@pytest.mark.parametrize("presign", [False, True], ids=["streamed", "presigned"])
async def test_on_s3_a_result_revalidates_streamed_or_presigned(
    s3_settings: Settings, queue: JobQueue, presign: bool
) -> None:
    settings = s3_settings.model_copy(update={"s3_presign": presign})
    async with client_for(create_app(settings)) as client:
        url = await finished_job(client, settings, queue, S3Storage(settings))
        first = await client.get(url)
        assert first.status_code == (307 if presign else 200)
        assert first.headers["etag"] == expected_etag()
        if presign:
            assert first.headers["cache-control"] == "no-store"  # the URL expires
            async with httpx.AsyncClient() as bucket:
                assert (await bucket.get(first.headers["location"])).content[:2] == b"\xff\xd8"
        else:
            assert cache_control(first, settings) == "public"
        again = await client.get(url, headers={"If-None-Match": expected_etag()})
        assert again.status_code == 304
        assert again.headers["etag"] == expected_etag()
