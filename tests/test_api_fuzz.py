"""Schemathesis against the app's own OpenAPI schema, in-process (ASGI), on a real Redis.

Positive and negative requests for every operation, with access control on and a valid key
sent; jobs that are queued, done and failed exist, so the job routes answer more than 404.
Every answer must be no 5xx, a status, content type, headers and body the schema declares.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imgstream.api import create_app
from imgstream.auth import fingerprint
from imgstream.config import Settings
from imgstream.connection import connect
from imgstream.jobs import StreamEntry, new_job_id
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo

KEY = "fuzz-key-0123456789abcdef"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass(frozen=True)
class Target:
    schema: schemathesis.BaseSchema
    job_ids: tuple[str, ...]


@pytest.fixture(scope="module")
def target(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    config = Settings(
        redis_url=redis_server.url,
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        key_prefix=f"fuzz-{uuid.uuid4().hex[:8]}",
        api_keys=(SecretStr(KEY),),
        rate_limit_per_second=0,  # thousands of requests from one client, on purpose
        max_upload_bytes=256 * 1024,
        block_ms=10,
        ready_worker_age=0,  # no workers run here; /readyz's documented 503 is not a fault
    )
    job_ids = anyio.run(seed_jobs, config)
    app = create_app(config)
    try:
        yield Target(schemathesis.openapi.from_asgi("/openapi.json", app), job_ids)
    finally:
        asgi.shutdown_lifespans()


async def seed_jobs(config: Settings) -> tuple[str, ...]:
    """One job done, one failed, one still queued, all owned by ``KEY``."""
    redis = connect(config.effective_redis_url)
    queue = JobQueue(redis, Keys(config.key_prefix), config.group)
    storage = LocalStorage(config.data_dir)
    good = encode(photo(40, 30), "png")
    ids = []
    try:
        for data in (good, good[:300], good):
            job_id = new_job_id()
            storage.save_original(job_id, io.BytesIO(data))
            entry = StreamEntry(job_id=job_id, operations='[{"op":"grayscale"}]')
            await queue.enqueue(job_id, entry, filename="a.png", owner=fingerprint(KEY))
            ids.append(job_id)
            if len(ids) == 2:
                await Worker(config, queue, storage).run(burst=True)
    finally:
        await redis.aclose()
    return tuple(ids)


PNG = encode(photo(24, 16), "png")
UPLOADS = [
    {"image": PNG, "operation": "resize", "width": "12"},
    {"image": PNG, "operation": "blur", "sigma": "0.5", "format": "webp"},
    {"image": PNG, "operations": '[{"op":"resize","height":8,"fit":"cover"},{"op":"grayscale"}]'},
    {"image": PNG, "operation": "resize", "width": "99999999"},
    {"image": PNG, "operations": '[{"op":"blur","sigma":1e308}]'},
    {"image": PNG[:40], "operation": "grayscale"},
    {"image": b"GIF89a", "operation": "grayscale", "format": "gif"},
]
"""Bodies the generator would rarely stumble on: real images, with good and bad parameters."""


def cases(target: Target, mode: GenerationMode) -> st.SearchStrategy[schemathesis.Case]:
    """Every operation; the job routes also aimed at the seeded jobs, uploads with real images."""
    strategies = [target.schema.as_strategy(mode)]
    for path in ("/api/jobs/{job_id}", "/api/jobs/{job_id}/result"):
        operation = target.schema[path]["GET"]
        strategies += [
            operation.as_strategy(mode, path_parameters={"job_id": job_id})
            for job_id in target.job_ids
        ]
    if mode is GenerationMode.POSITIVE:
        upload = target.schema["/api/jobs"]["POST"]
        strategies += [upload.as_strategy(mode, body=body) for body in UPLOADS]
    return st.one_of(strategies)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_answers_as_its_schema_says(target: Target, mode: GenerationMode) -> None:
    @FUZZ
    @given(case=cases(target, mode))
    def check(case: schemathesis.Case) -> None:
        # The key is always right: the gate's 401 is tested elsewhere, and a negated header
        # would otherwise stop most negative cases before they reach the routes.
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}"}
        response = case.call()
        case.validate_response(response, checks=CHECKS)

    check()
