"""Access control: API keys, job ownership, and what stays open, in-process against real Redis."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from imgstream.api import create_app
from imgstream.auth import ANYONE, PUBLIC_API_PATHS, KeyRing, bearer_token, fingerprint
from imgstream.config import Settings
from imgstream.keys import Keys
from imgstream.queue import JobQueue

from images import encode, photo
from inprocess import assert_error, client_for, drain

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
PNG = encode(photo(40, 30), "png")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# The key ring, pure.


def test_key_ring_off_lets_anyone_in() -> None:
    ring = KeyRing([])
    assert not ring.enabled
    assert ring.identify(None) is ANYONE
    assert ring.identify("Bearer whatever") is ANYONE
    assert ANYONE.may_see("") and ANYONE.may_see(fingerprint(KEY_A))


def test_key_ring_identifies_keys_by_fingerprint() -> None:
    ring = KeyRing([KEY_A, KEY_B])
    a = ring.identify(f"Bearer {KEY_A}")
    b = ring.identify(f"bearer   {KEY_B} ")
    assert a is not None and b is not None
    assert a.owner == hashlib.sha256(KEY_A.encode()).hexdigest() != b.owner
    assert KEY_A not in a.owner
    assert a.may_see(a.owner) and not a.may_see(b.owner) and not a.may_see("")
    for refused in (None, "", "Bearer", "Bearer ", f"Basic {KEY_A}", f"Bearer {KEY_A}x", KEY_A):
        assert ring.identify(refused) is None, refused


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER  abc ") == "abc"
    assert bearer_token("Token abc") is None
    assert bearer_token(None) is None


def test_api_keys_setting_splits_and_refuses_weak_keys_without_echoing_them() -> None:
    settings = Settings(api_keys=f" {KEY_A}, ,{KEY_B},")  # type: ignore[arg-type]
    assert [key.get_secret_value() for key in settings.api_keys] == [KEY_A, KEY_B]
    assert KEY_A not in repr(settings)
    for weak in ("short", "has spaces in the key!!", "bad\u00e9-character-key-0123"):
        with pytest.raises(ValidationError) as refused:
            Settings(api_keys=weak)  # type: ignore[arg-type]
        assert weak not in str(refused.value)


# Through the API.


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": (SecretStr(KEY_A), SecretStr(KEY_B))})


@pytest.fixture
async def client(keyed: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(keyed)) as client:
        yield client


async def upload(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/api/jobs",
        files={"image": ("a.png", PNG)},
        data={"operation": "grayscale"},
        headers=headers,
    )


@pytest.mark.anyio
async def test_api_needs_a_key_and_says_how(client: httpx.AsyncClient, keyed: Settings) -> None:
    missing = await upload(client, {})
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == 'Bearer realm="imgstream"'
    assert missing.headers["content-security-policy"]  # errors from the gate are hardened too
    wrong = await upload(client, bearer("not-a-configured-key-0000"))
    assert_error(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert_error(await client.get("/api/jobs/" + "0" * 32), 401)
    assert_error(await client.get("/api/nothing-here"), 401)  # unknown paths reveal nothing
    assert not any((keyed.data_dir / "originals").iterdir())  # refused before the body was kept


@pytest.mark.anyio
async def test_a_job_is_visible_only_to_its_key(
    client: httpx.AsyncClient, keyed: Settings, redis: Redis
) -> None:
    accepted = await upload(client, bearer(KEY_A))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    owner = await redis.hget(Keys(keyed.key_prefix).job(job_id), "owner")
    assert owner == fingerprint(KEY_A)  # a fingerprint, never the key

    assert (await client.get(f"/api/jobs/{job_id}", headers=bearer(KEY_A))).status_code == 200
    other = await client.get(f"/api/jobs/{job_id}", headers=bearer(KEY_B))
    assert_error(other, 404, "not_found")
    unknown = await client.get("/api/jobs/" + "0" * 32, headers=bearer(KEY_B))
    assert other.json() == unknown.json()  # another's job looks exactly like no job

    await drain(keyed, JobQueue(redis, Keys(keyed.key_prefix), keyed.group))
    result = f"/api/jobs/{job_id}/result"
    assert (await client.get(result, headers=bearer(KEY_A))).status_code == 200
    assert_error(await client.get(result, headers=bearer(KEY_B)), 404)
    assert_error(await client.get(result), 401)


@pytest.mark.anyio
async def test_health_page_and_static_stay_open(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/", "/static/app.js", "/openapi.json", "/api/limits"):
        assert (await client.get(path)).status_code == 200, path
    readiness = await client.get("/readyz")  # 503 here only because no worker runs
    assert readiness.status_code != 401 and "www-authenticate" not in readiness.headers


@pytest.mark.anyio
async def test_every_api_route_is_behind_the_key(keyed: Settings) -> None:
    """Walks the routes, so a route added later under /api is checked as well."""
    app = create_app(keyed)
    api_routes = [
        route
        for route in app.routes
        if isinstance(route, APIRoute)
        and route.path.startswith("/api")
        and route.path not in PUBLIC_API_PATHS
    ]
    assert {"/api/limits"} == PUBLIC_API_PATHS  # the operator's limits, read by the page
    assert len(api_routes) >= 3
    async with client_for(app) as client:
        for route in api_routes:
            path = route.path.replace("{job_id}", "0" * 32)
            for method in route.methods:
                response = await client.request(method, path)
                assert response.status_code == 401, (method, path, response.status_code)
        schema = (await client.get("/openapi.json")).json()
    assert "ApiKey" in schema["components"]["securitySchemes"]
    for path, operations in schema["paths"].items():
        if path.startswith("/api") and path not in PUBLIC_API_PATHS:
            for operation in operations.values():
                assert "401" in operation["responses"], path


@pytest.mark.anyio
async def test_the_gate_refuses_before_reading_the_body(keyed: Settings) -> None:
    app = create_app(keyed)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        raise AssertionError("the body of an unauthenticated upload was read")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x")],
        "client": ("192.0.2.7", 1234),
        "server": ("test", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 401
