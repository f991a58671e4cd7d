"""The result cache (an identical upload is done at once, with the same bytes, as a job of
its own caller; originals and results stored once; retention by the newest user) and
results as HTTP caches see them (a strong ``ETag``, ``Cache-Control: immutable`` for the
time left, ``304`` on ``If-None-Match``): in-process against a real Redis (also a real
3-master cluster), real workers and, for S3, a real SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.cache import SharedFiles
from imgstream.config import Settings
from imgstream.content import content_key
from imgstream.deployment import Deployment
from imgstream.janitor import Janitor
from imgstream.job_counters import CACHE_HITS_FIELD
from imgstream.jobs import new_job_id
from imgstream.operations import Limits, spec_from_form
from imgstream.queue import JobQueue, Keys
from imgstream.redis_server import RedisServer
from imgstream.s3_storage import S3Storage
from imgstream.storage import LocalStorage, Storage
from imgstream.worker import Worker
from redis_cluster import RedisCluster
from seaweed import SeaweedS3, keys_in

from images import encode, photo
from inprocess import client_for
from service import Service, stop

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


async def upload(client: httpx.AsyncClient, data: bytes = JPEG, **fields: str) -> httpx.Response:
    headers = {"Authorization": fields.pop("auth")} if "auth" in fields else {}
    response = await client.post(
        "/api/jobs",
        files={"image": ("a.jpg", data)},
        data={**FIELDS, **fields},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return response


def stored(settings: Settings) -> tuple[list[str], list[str]]:
    """Names in the data directory's originals/ and results/."""
    storage = LocalStorage(settings.data_dir)
    return (
        sorted(path.name for path in storage.originals.iterdir()),
        sorted(path.name for path in storage.results.iterdir()),
    )


async def result_of(client: httpx.AsyncClient, accepted: httpx.Response, **headers: str) -> bytes:
    response = await client.get(f"{accepted.headers['location']}/result", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


async def test_an_identical_upload_is_done_at_once_with_the_same_bytes(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue, redis: Redis
) -> None:
    first = await upload(client)
    await Worker(settings, queue, LocalStorage(settings.data_dir)).run(burst=True)
    second = await upload(client)  # no worker runs from here on
    assert second.json()["status"] == "done"
    assert second.json()["id"] != first.json()["id"]
    assert await queue.backlog() == 0
    assert await result_of(client, second) == await result_of(client, first)
    job = (await client.get(second.headers["location"])).json()
    assert job["status"] == "done" and job["result"]["width"] == 32
    assert job["cached"] is True  # said, so that a client can tell
    assert (await client.get(first.headers["location"])).json()["cached"] is False
    assert job["original"]["width"] == 64
    key = content_key(hashlib.sha256(JPEG).hexdigest(), spec_from_form(FIELDS, Limits()))
    assert stored(settings) == ([hashlib.sha256(JPEG).hexdigest()], [f"{key}.jpg"])
    tag = (await client.get(f"{first.headers['location']}/result")).headers["etag"]
    again = await client.get(f"{second.headers['location']}/result", headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert await redis.hget(queue.keys.metrics, CACHE_HITS_FIELD) == "1"
    counted = (await client.get("/api/stats")).json()["jobs"]
    assert (counted["submitted"], counted["done"], counted["cache_hits"]) == (2, 2, 1)
    assert "imgstream_cache_hits_total 1.0" in (await client.get("/metrics")).text


async def test_a_changed_step_or_output_option_is_not_served_from_the_cache(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    await upload(client)
    await Worker(settings, queue, LocalStorage(settings.data_dir)).run(burst=True)
    for changed in ({"width": "16"}, {"quality": "50"}, {"strip": "false"}, {"format": "png"}):
        assert (await upload(client, **changed)).json()["status"] == "queued", changed
    assert (await upload(client, data=encode(photo(48, 64), "jpeg"))).json()["status"] == "queued"
    originals, _ = stored(settings)
    assert len(originals) == 2  # one per content hash, whatever the steps


async def test_another_key_gets_its_own_job_and_never_reads_the_first(
    settings: Settings, queue: JobQueue
) -> None:
    other = "o" * 24
    keyed = settings.model_copy(update={"api_keys": (SecretStr(KEY), SecretStr(other))})
    mine, theirs = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {other}"}
    async with client_for(create_app(keyed)) as client:
        first = await upload(client, auth=mine["Authorization"])
        await Worker(keyed, queue, LocalStorage(settings.data_dir)).run(burst=True)
        second = await upload(client, auth=theirs["Authorization"])
        assert second.json()["status"] == "done"
        assert second.json()["id"] != first.json()["id"]
        for job, stranger in ((first, theirs), (second, mine)):
            location = job.headers["location"]
            assert (await client.get(location, headers=stranger)).status_code == 404
            assert (await client.get(f"{location}/result", headers=stranger)).status_code == 404
        assert await result_of(client, second, **theirs) == await result_of(client, first, **mine)


async def test_with_the_cache_off_an_identical_upload_is_queued(
    settings: Settings, queue: JobQueue
) -> None:
    off = settings.model_copy(update={"result_cache": False})
    async with client_for(create_app(off)) as client:
        first = await upload(client)
        await Worker(off, queue, LocalStorage(settings.data_dir)).run(burst=True)
        second = await upload(client)
        assert second.json()["status"] == "queued"
    ids = sorted(answer.json()["id"] for answer in (first, second))
    assert stored(settings) == (ids, [f"{first.json()['id']}.jpg"])  # stored per job


async def make_shared_files_due(redis: Redis, keys: Keys) -> None:
    """As if ``IMGSTREAM_ORPHAN_AGE`` had passed: the janitor looks at every shared file."""
    names = await redis.zrange(keys.shared, 0, -1)
    if names:
        await redis.zadd(keys.shared, dict.fromkeys(names, 0))


async def expire(redis: Redis, keys: Keys, job_id: str) -> None:
    """As if the job's result TTL had run out now."""
    assert await redis.pexpireat(keys.job(job_id), 1)
    await redis.zadd(keys.expiry, {job_id: 0})


async def test_a_shared_result_lives_as_long_as_its_newest_job(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue, redis: Redis
) -> None:
    storage = LocalStorage(settings.data_dir)
    janitor = Janitor(redis, queue.keys, storage, orphan_age=0)
    first = await upload(client)
    await Worker(settings, queue, storage).run(burst=True)
    expected = await result_of(client, first)
    second = await upload(client)
    await expire(redis, queue.keys, first.json()["id"])
    await make_shared_files_due(redis, queue.keys)
    swept = await janitor.sweep()
    assert swept is not None and swept.shared == 1  # the original: only the first used it
    assert (await client.get(first.headers["location"])).status_code == 404
    assert await result_of(client, second) == expected
    assert stored(settings)[0] == []
    await expire(redis, queue.keys, second.json()["id"])
    await make_shared_files_due(redis, queue.keys)
    swept = await janitor.sweep()
    assert swept is not None and swept.shared == 1
    assert stored(settings) == ([], [])
    assert await redis.keys(f"{queue.keys.base}:shared*") == []
    assert await redis.keys(f"{queue.keys.base}:cache:*") == []
    assert (await upload(client)).json()["status"] == "queued"  # nothing cached any more


async def test_the_janitor_keeps_a_file_pinned_for_a_job_being_made(
    settings: Settings, queue: JobQueue, redis: Redis
) -> None:
    storage = LocalStorage(settings.data_dir)
    shared = SharedFiles(redis, queue.keys, first_look=0)
    name = hashlib.sha256(b"x").hexdigest()
    assert await shared.pin(name, new_job_id())  # the API stores the file next, then queues
    storage.save_original(name, io.BytesIO(b"x"))
    swept = await Janitor(redis, queue.keys, storage, orphan_age=3600).sweep()
    assert swept is not None and swept.shared == 0
    assert storage.has_original(name)
    await redis.set(queue.keys.retiring(name), "1")  # the janitor deleting it, meanwhile
    assert not await shared.pin(name, new_job_id())


async def test_on_s3_an_identical_upload_is_done_at_once_and_stored_once(
    s3_settings: Settings, queue: JobQueue, seaweed: SeaweedS3
) -> None:
    async with client_for(create_app(s3_settings)) as client:
        first = await upload(client)
        await Worker(s3_settings, queue, S3Storage(s3_settings)).run(burst=True)
        second = await upload(client)
        assert second.json()["status"] == "done"
        assert await result_of(client, second) == await result_of(client, first)
    key = content_key(hashlib.sha256(JPEG).hexdigest(), spec_from_form(FIELDS, Limits()))
    assert keys_in(seaweed, s3_settings.s3_bucket) == [
        f"fleet/originals/{hashlib.sha256(JPEG).hexdigest()}",
        f"fleet/results/{key}.jpg",
    ]


async def test_the_cache_on_the_cluster(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=redis_cluster.url,
        redis_cluster=True,
        data_dir=tmp_path / "data",
        key_prefix=f"rc-{uuid.uuid4().hex[:8]}",
    )
    async with client_for(create_app(settings)) as client:
        deployment = Deployment.open(settings)
        try:
            first = await upload(client)
            await Worker(settings, deployment.queue, deployment.storage).run(burst=True)
            second = await upload(client)
            assert second.json()["status"] == "done"
            assert await result_of(client, second) == await result_of(client, first)
            for job in (first, second):
                await expire(deployment.redis, deployment.keys, job.json()["id"])
            await make_shared_files_due(deployment.redis, deployment.keys)
            janitor = Janitor(deployment.redis, deployment.keys, deployment.storage, orphan_age=0)
            swept = await janitor.sweep()
            assert swept is not None and swept.shared == 2
        finally:
            await deployment.aclose()


def test_the_running_service_serves_a_repeat_with_no_worker_left(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    service = Service.launch(
        redis_server.url, tmp_path / "data", f"rc-{uuid.uuid4().hex[:8]}",
        concurrency=1, IMGSTREAM_RESULT_CACHE="true",
    )  # fmt: skip
    try:
        first = service.submit(JPEG, "a.jpg", **FIELDS)
        assert first.status_code == 202, first.text
        assert service.wait(first.json()["id"])["status"] == "done"
        assert stop(service.workers) == 0  # no worker from here on
        second = service.submit(JPEG, "b.jpg", **FIELDS)
        assert second.status_code == 202, second.text
        assert second.json()["status"] == "done"
        results = [
            service.http.get(f"/api/jobs/{answer.json()['id']}/result")
            for answer in (first, second)
        ]
        assert results[0].status_code == results[1].status_code == 200
        assert results[0].content == results[1].content
        assert results[1].headers["etag"] == expected_etag()
        assert service.submit(JPEG, "c.jpg", operation="grayscale").json()["status"] == "queued"
    finally:
        service.close()
