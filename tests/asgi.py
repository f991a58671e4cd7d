"""An in-process HTTP client for the ASGI app that runs its lifespan (Redis connection)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI


def client_for(app: FastAPI) -> httpx.AsyncClient:
    class LifespanClient(httpx.AsyncClient):
        async def __aenter__(self) -> LifespanClient:
            self._lifespan = app.router.lifespan_context(app)
            await self._lifespan.__aenter__()
            await super().__aenter__()
            return self

        async def __aexit__(self, *exc: object) -> None:
            await super().__aexit__(*exc)  # type: ignore[arg-type]
            await self._lifespan.__aexit__(None, None, None)

    return LifespanClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
