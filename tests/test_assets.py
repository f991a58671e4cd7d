"""The page's static files: served with revalidation so that a new release shows at once."""

from __future__ import annotations

import httpx
import pytest

from imgstream.api import create_app
from imgstream.config import Settings

pytestmark = pytest.mark.anyio

MODULES = [
    "app.js",
    "api.js",
    "cards.js",
    "dom.js",
    "eventstream.js",
    "keyform.js",
    "keys.js",
    "pipeline.js",
    "placeholder.js",
    "recent.js",
    "watch.js",
    "zip.js",
]


async def test_assets_revalidate_by_etag(settings: Settings) -> None:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name in [*MODULES, "style.css", "form.css", "jobs.css", "keys.css", "favicon.svg"]:
            response = await client.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert response.headers["cache-control"] == "no-cache"
            etag = response.headers["etag"]
            again = await client.get(f"/static/{name}", headers={"If-None-Match": etag})
            assert again.status_code == 304
            assert again.headers["cache-control"] == "no-cache" and again.content == b""
        script = await client.get("/static/app.js")
        assert script.headers["content-type"].startswith("text/javascript")  # modules need it
        page = await client.get("/")
        assert page.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="/static/app.js">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/static/nothing.js")).status_code == 404
