"""CORS allow-list (``IMGSTREAM_CORS_ORIGINS``) through the real app, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from imgstream.api import create_app
from imgstream.config import Settings

from inprocess import client_for

pytestmark = pytest.mark.anyio

ALLOWED = "https://photos.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def test_cors_origins_setting_is_a_comma_separated_allow_list() -> None:
    settings = Settings(cors_origins=f" {ALLOWED}/ , http://localhost:3000,")  # type: ignore[arg-type]
    assert settings.cors_origins == (ALLOWED, "http://localhost:3000")
    assert Settings().cors_origins == ()
    for bad in ("photos.example", "https://photos.example/path", "javascript:alert(1)"):
        with pytest.raises(ValidationError):
            Settings(cors_origins=bad)  # type: ignore[arg-type]


async def test_allowed_origin_gets_cors_headers_others_do_not(settings: Settings) -> None:
    with_cors = settings.model_copy(update={"cors_origins": (ALLOWED,)})
    async with client_for(create_app(with_cors)) as client:
        preflight = await client.options("/api/jobs", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers

        simple = await client.get("/api/jobs/" + "0" * 32, headers={"Origin": ALLOWED})
        assert simple.headers["access-control-allow-origin"] == ALLOWED
        assert "retry-after" in simple.headers["access-control-expose-headers"].lower()

        stranger = "https://evil.example"
        refused = await client.options("/api/jobs", headers={"Origin": stranger, **PREFLIGHT})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        other = await client.get("/api/jobs/" + "0" * 32, headers={"Origin": stranger})
        assert "access-control-allow-origin" not in other.headers


async def test_no_cors_by_default(client_without_cors: httpx.AsyncClient) -> None:
    response = await client_without_cors.get("/healthz", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers
    preflight = await client_without_cors.options(
        "/api/jobs", headers={"Origin": ALLOWED, **PREFLIGHT}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
async def client_without_cors(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings)) as client:
        yield client
