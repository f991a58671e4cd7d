"""Helpers for tests that drive the ASGI app in-process (real Redis, no sockets)."""

from __future__ import annotations

import io

import httpx
from fastapi import FastAPI

from imgstream.config import Settings
from imgstream.jobs import StreamEntry
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage, Storage
from imgstream.worker import Worker


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An HTTP client of ``app`` that runs its lifespan (start-up and shut-down) around use."""

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


async def store_and_enqueue(
    queue: JobQueue, storage: Storage, operations: str, original: bytes
) -> str:
    """A new job as the API makes one: the original stored first, then the job queued."""
    await queue.ensure_group()
    job_id = queue.new_job_id()
    storage.save_original(job_id, io.BytesIO(original))
    await queue.enqueue(job_id, StreamEntry(job_id, operations))
    return job_id


async def drain(settings: Settings, queue: JobQueue) -> None:
    """Process every queued job with an in-process worker, then return."""
    await Worker(settings, queue, LocalStorage(settings.data_dir)).run(burst=True)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is the documented JSON error with ``status`` (and ``code``); its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert message and "Traceback" not in message
    return message
