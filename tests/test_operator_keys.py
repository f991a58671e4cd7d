"""Operator keys (issue 11): with keys A and B and an operator key, B sees neither A's failures
nor A's dead letters, cannot retry them, and cannot read ``/metrics``; the operator can.
In-process against real Redis, with a real worker failing a job of A's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imgstream.api import create_app
from imgstream.auth import KeyRing, fingerprint
from imgstream.config import Settings
from imgstream.jobs import StreamEntry, new_job_id
from imgstream.queue import JobQueue
from imgstream.storage import LocalStorage
from imgstream.worker import Worker

from images import encode, photo
from inprocess import assert_error, client_for

pytestmark = pytest.mark.anyio

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
OPERATOR = "operator-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class BrokenDisk(LocalStorage):
    def save_result(self, job_id: str, data: bytes, extension: str) -> Path:
        raise OSError(5, "Input/output error")


def test_operator_keys_are_keys_that_see_everything() -> None:
    ring = KeyRing([KEY_A], [OPERATOR])
    a, operator = ring.identify(f"Bearer {KEY_A}"), ring.identify(f"Bearer {OPERATOR}")
    assert a is not None and operator is not None
    assert not a.operator and operator.operator
    assert operator.may_see(fingerprint(KEY_A)) and not a.may_see(operator.owner)


async def test_an_ordinary_key_sees_and_retries_only_its_own(
    queue: JobQueue, settings: Settings
) -> None:
    guarded = Settings(
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        key_prefix=settings.key_prefix,
        block_ms=50,
        api_keys=f"{KEY_A},{KEY_B}",
        admin_keys=OPERATOR,
        max_attempts=1,
        rate_limit_per_second=0,
    )
    storage = BrokenDisk(settings.data_dir)
    await queue.ensure_group()
    job_id = new_job_id()
    storage.save_original(job_id, io.BytesIO(encode(photo(40, 30), "png")))
    await queue.enqueue(
        job_id, StreamEntry(job_id, '[{"op":"grayscale"}]'), owner=fingerprint(KEY_A)
    )
    await Worker(guarded, queue, storage).run(burst=True)

    async with client_for(create_app(guarded)) as client:
        mine = (await client.get("/api/stats", headers=bearer(KEY_A))).json()
        theirs = (await client.get("/api/stats", headers=bearer(KEY_B))).json()
        everything = (await client.get("/api/stats", headers=bearer(OPERATOR))).json()
        assert theirs["recent_failures"] == [] and theirs["dead_letters"] == []
        assert mine["recent_failures"] == [] and mine["dead_letters"] == []
        assert [failure["job"] for failure in everything["recent_failures"]] == [job_id]
        [letter] = everything["dead_letters"]
        assert letter["job_id"] == job_id
        assert theirs["jobs"]["failed"] == everything["jobs"]["failed"] == 1  # figures are shared

        retry = f"/api/dead-letters/{letter['entry_id']}/retry"
        assert_error(await client.post(retry, headers=bearer(KEY_B)), 403, "forbidden")
        assert_error(await client.get("/metrics", headers=bearer(KEY_B)), 403, "forbidden")
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        assert (await client.get("/metrics", headers=bearer(OPERATOR))).status_code == 200
        assert (
            await client.get(f"/api/jobs/{job_id}", headers=bearer(OPERATOR))
        ).status_code == 200
        assert_error(await client.get(f"/api/jobs/{job_id}", headers=bearer(KEY_B)), 404)
        assert (await client.post(retry, headers=bearer(OPERATOR))).status_code == 202
