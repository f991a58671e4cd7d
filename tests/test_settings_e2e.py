"""Settings docs/configuration.md promises, each through real processes: ``imgstream api``
(and workers where the promise needs them) on a private Redis, driven over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from imgstream.redis_server import RedisServer

from inprocess import assert_error
from service import PNG, Api, Service, api_alone, start, stop, wait_for

pytestmark = pytest.mark.slow


def test_max_backlog_answers_429_backlog_full_with_retry_after(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with (
        api_alone(redis_server.url, tmp_path, IMGSTREAM_MAX_BACKLOG="2") as api,
        httpx.Client() as http,
    ):
        assert [api.upload(http).status_code for _ in range(2)] == [202, 202]
        refused = api.upload(http)
        assert "2" in assert_error(refused, 429, "backlog_full")
        assert int(refused.headers["retry-after"]) >= 1
        assert len(list((api.data_dir / "originals").iterdir())) == 2  # the refused one: none


@pytest.mark.parametrize("public_url", ["https://img.example/base", "https://img.example/base/"])
def test_public_url_is_in_links_and_location(
    redis_server: RedisServer, tmp_path: Path, public_url: str
) -> None:
    with (
        api_alone(redis_server.url, tmp_path, IMGSTREAM_PUBLIC_URL=public_url) as api,
        httpx.Client() as http,
    ):
        accepted = api.upload(http)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        own = f"https://img.example/base/api/jobs/{job_id}"
        assert accepted.headers["location"] == own
        links = {"self": own, "result": f"{own}/result"}
        assert accepted.json()["links"] == links
        assert http.get(f"{api.url}/api/jobs/{job_id}").json()["links"] == links


def test_forwarded_for_gives_each_client_behind_a_trusted_proxy_its_own_bucket(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """One upload per 1000 s per client. The default trusts a proxy on 127.0.0.1, where this
    test connects from; a proxy list without it makes every client one, the proxy."""
    tight = {"IMGSTREAM_RATE_LIMIT_PER_SECOND": "0.001", "IMGSTREAM_RATE_LIMIT_BURST": "1"}
    a, b = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}
    with api_alone(redis_server.url, tmp_path, **tight) as api, httpx.Client() as http:
        assert [api.upload(http, **a).status_code for _ in range(2)] == [202, 429]
        assert api.upload(http, **b).status_code == 202  # another client behind the proxy
    distrust = {**tight, "IMGSTREAM_FORWARDED_ALLOW_IPS": "192.0.2.1"}
    with api_alone(redis_server.url, tmp_path, **distrust) as api, httpx.Client() as http:
        assert [api.upload(http, **a).status_code for _ in range(2)] == [202, 429]
        assert api.upload(http, **b).status_code == 429  # the header is not believed


def test_cors_star_lets_any_origin_call_the_api(redis_server: RedisServer, tmp_path: Path) -> None:
    origin = "https://anywhere.example"
    with (
        api_alone(redis_server.url, tmp_path, IMGSTREAM_CORS_ORIGINS="*") as api,
        httpx.Client() as http,
    ):
        preflight = http.options(
            f"{api.url}/api/jobs",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] in ("*", origin)
        assert "POST" in preflight.headers["access-control-allow-methods"]
        accepted = api.upload(http, Origin=origin)
        assert accepted.status_code == 202
        assert accepted.headers["access-control-allow-origin"] in ("*", origin)
        assert "location" in accepted.headers["access-control-expose-headers"].lower()
    with api_alone(redis_server.url, tmp_path) as api, httpx.Client() as http:  # default: no CORS
        assert "access-control-allow-origin" not in api.upload(http, Origin=origin).headers


def test_a_job_past_its_result_ttl_answers_404_and_its_files_go(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The TTL Redis holds is the setting's; once it has run out (brought forward here, not
    waited for) the job is unknown, and the workers' janitor removes its files by itself."""
    service = Service.launch(
        redis_server.url, tmp_path / "data", f"ttl-{uuid.uuid4().hex[:8]}", concurrency=1,
        IMGSTREAM_RESULT_TTL="60", IMGSTREAM_JANITOR_INTERVAL="1",
    )  # fmt: skip
    raw = redis.Redis.from_url(redis_server.url)
    try:
        job_id = service.submit(PNG, "a.png", operation="grayscale").json()["id"]
        assert service.wait(job_id)["status"] == "done"
        key = f"{{{service.prefix}}}:job:{job_id}"
        assert 0 < raw.ttl(key) <= 60
        files = [
            service.data_dir / "originals" / job_id,
            service.data_dir / "results" / f"{job_id}.png",
        ]
        assert all(path.exists() for path in files)
        assert raw.pexpireat(key, 1)
        raw.zadd(f"{{{service.prefix}}}:expiry", {job_id: 0})
        assert_error(service.http.get(f"/api/jobs/{job_id}"), 404, "not_found")
        assert_error(service.http.get(f"/api/jobs/{job_id}/result"), 404)
        wait_for(lambda: not any(path.exists() for path in files), "the janitor never swept")
    finally:
        raw.close()
        service.close()


def test_janitor_interval_zero_means_the_workers_never_sweep(
    redis_server: RedisServer, raw_client: redis.Redis, tmp_path: Path
) -> None:
    """Two fleets, each with a job past its TTL: one with ``IMGSTREAM_JANITOR_INTERVAL=0``,
    started first, and a witness sweeping every second. Once the witness has swept twice, the
    first fleet, up longer, has still swept nothing and its files are all there."""
    with (
        api_alone(redis_server.url, tmp_path) as never,
        api_alone(redis_server.url, tmp_path) as witness,
        httpx.Client(timeout=30) as http,
    ):
        never_pool = start(
            ["worker", "--concurrency", "1"],
            {**never.env, "IMGSTREAM_JANITOR_INTERVAL": "0"},
            tmp_path / "never.log",
        )
        witness_pool = None
        try:
            expired = {api.prefix: ended_job(api, http, raw_client) for api in (never, witness)}
            witness_pool = start(
                ["worker", "--concurrency", "1"],
                {**witness.env, "IMGSTREAM_JANITOR_INTERVAL": "1"},
                tmp_path / "witness.log",
            )
            scans: set[str] = set()

            def witness_swept_twice() -> bool:
                scanned = raw_client.hget(f"{{{witness.prefix}}}:storage", "scanned_at")
                if scanned:
                    scans.add(str(scanned))
                return len(scans) >= 2

            wait_for(witness_swept_twice, "the witness fleet never swept twice")
            assert not (witness.data_dir / "originals" / expired[witness.prefix]).exists()
            assert raw_client.exists(f"{{{never.prefix}}}:storage") == 0
            assert (never.data_dir / "originals" / expired[never.prefix]).exists()
        finally:
            stop(never_pool)
            if witness_pool is not None:
                stop(witness_pool)


def ended_job(api: Api, http: httpx.Client, raw_client: redis.Redis) -> str:
    """A job processed by a burst worker, its TTL then brought to an end (not waited for)."""
    accepted = api.upload(http)
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["id"]
    burst = start(["worker", "--burst"], {**api.env, "IMGSTREAM_JANITOR_INTERVAL": "0"}, api.log)
    assert burst.wait(120) == 0, api.log.read_text()[-3000:]
    key = f"{{{api.prefix}}}:job:{job_id}"
    assert raw_client.hget(key, "status") == b"done"
    assert raw_client.pexpireat(key, 1)
    raw_client.zadd(f"{{{api.prefix}}}:expiry", {job_id: 0})
    return job_id


@pytest.fixture
def raw_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
