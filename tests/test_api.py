"""The HTTP API in-process against a real Redis: statuses, errors, results."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import pyvips

from imgstream.api import MULTIPART_OVERHEAD, create_app
from imgstream.config import Settings
from imgstream.queue import JobQueue
from imgstream.redis_server import free_port

from images import encode, photo
from inprocess import assert_error, client_for, drain

pytestmark = pytest.mark.anyio

JPEG = encode(photo(64, 48), "jpeg")


async def upload(
    client: httpx.AsyncClient, data: bytes = JPEG, name: str = "photo.jpg", **fields: str
) -> httpx.Response:
    return await client.post("/api/jobs", files={"image": (name, data)}, data=fields)


async def test_upload_status_result(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    response = await upload(client, operation="resize", width="32")
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["id"]
    assert accepted["status"] == "queued"
    assert accepted["links"] == {
        "self": f"/api/jobs/{job_id}",
        "result": f"/api/jobs/{job_id}/result",
    }
    assert response.headers["location"] == f"/api/jobs/{job_id}"

    queued = (await client.get(f"/api/jobs/{job_id}")).json()
    assert queued["status"] == "queued"
    assert queued["operations"] == [
        {"op": "resize", "width": 32, "height": None, "fit": "inside", "enlarge": False}
    ]
    assert queued["result"] is None and queued["error"] is None and queued["attempts"] == 0
    assert queued["filename"] == "photo.jpg"
    assert_error(await client.get(f"/api/jobs/{job_id}/result"), 409, "not_ready")

    await drain(settings, queue)
    done = (await client.get(f"/api/jobs/{job_id}")).json()
    assert done["status"] == "done", done
    assert done["attempts"] == 1
    assert done["result"]["width"] == 32 and done["result"]["height"] == 24
    assert done["result"]["format"] == "jpeg"
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]

    result = await client.get(done["result"]["url"])
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/jpeg"
    assert len(result.content) == done["result"]["bytes"]
    assert 'filename="photo.jpg"' in result.headers["content-disposition"]
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert (image.width, image.height) == (32, 24)


async def test_chained_operations_and_format(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    chain = json.dumps([{"op": "resize", "width": 20}, {"op": "grayscale"}, {"op": "blur"}])
    response = await upload(client, operations=chain, format="webp")
    assert response.status_code == 202, response.text
    await drain(settings, queue)
    job = (await client.get(f"/api/jobs/{response.json()['id']}")).json()
    assert job["status"] == "done" and job["result"]["format"] == "webp"
    result = await client.get(job["result"]["url"])
    assert result.headers["content-type"] == "image/webp"
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert image.width == 20


@pytest.mark.parametrize(
    "fields",
    [
        {"operation": "explode"},
        {"operation": "resize", "width": "0"},
        {"operation": "resize"},
        {"operation": "blur", "sigma": "-1"},
        {"operation": "blur", "sigma": "5000"},
        {"operations": "[not json"},
        {},
    ],
)
async def test_bad_parameters_answer_422(client: httpx.AsyncClient, fields: dict[str, str]) -> None:
    assert_error(await upload(client, **fields), 422, "invalid_parameters")


async def test_missing_image_answers_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/jobs", data={"operation": "grayscale"})
    assert_error(response, 422)


async def test_text_named_jpg_answers_415_and_stores_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await upload(
        client, b"hello, I am not a picture\n" * 10, "cat.jpg", operation="blur"
    )
    assert_error(response, 415, "unsupported_format")
    empty = await upload(client, b"", "empty.png", operation="blur")
    assert_error(empty, 415)
    assert list((settings.data_dir / "originals").iterdir()) == []


async def test_declared_oversize_body_answers_413(tmp_path: Path, settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 2048})
    async with client_for(create_app(small)) as client:
        big = encode(photo(300, 300), "png")
        assert len(big) > 2048 + MULTIPART_OVERHEAD  # the body's declared length is over
        response = await upload(client, big, "big.png", operation="blur")
        assert_error(response, 413, "too_large")
        fits_body_not_file = await upload(client, b"\0" * 4096, "z.png", operation="blur")
        assert_error(fits_body_not_file, 413, "too_large")


async def test_unknown_and_malformed_job_ids_answer_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/jobs/" + "0" * 32), 404, "not_found")
    assert_error(await client.get("/api/jobs/..%2F..%2Fetc%2Fpasswd"), 404)
    assert_error(await client.get("/api/jobs/" + "0" * 32 + "/result"), 404)
    assert_error(await client.get("/api/nothing-here"), 404)


async def test_failed_job_reports_a_readable_error(
    client: httpx.AsyncClient, settings: Settings, queue: JobQueue
) -> None:
    """The header is sound, so the API accepts it; decoding fails in the worker."""
    whole = encode(photo(200, 150), "jpeg")
    truncated = whole[: len(whole) // 2]
    response = await upload(client, truncated, "broken.jpg", operation="grayscale")
    assert response.status_code == 202, response.text
    await drain(settings, queue)
    job = (await client.get(f"/api/jobs/{response.json()['id']}")).json()
    assert job["status"] == "failed"
    assert job["error"] and "decode" in job["error"]
    assert job["error_code"] == "decode_error"
    assert_error(await client.get(f"/api/jobs/{job['id']}/result"), 409, "job_failed")


async def test_health_readiness_docs_and_page(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    # Redis is up but no worker was ever seen: not ready (see test_monitor for the rest).
    assert_error(await client.get("/readyz"), 503, "no_workers")
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/api/jobs" in schema["paths"]
    page = await client.get("/")
    assert page.status_code == 200 and "imgstream" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/static/app.js")).status_code == 200


async def test_redis_unreachable_answers_503_with_retry_after(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with client_for(create_app(nowhere)) as client:
        response = await upload(client, operation="grayscale")
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"]
        assert_error(await client.get("/readyz"), 503)
        assert_error(await client.get("/api/jobs/" + "a" * 32), 503)
        assert (await client.get("/healthz")).status_code == 200
    assert list((nowhere.data_dir / "originals").iterdir()) == []


async def test_limits_say_what_the_operator_allows(settings: Settings) -> None:
    tight = settings.model_copy(
        update={"max_sigma": 12.5, "max_dimension": 4000, "batch_max_files": 7}
    )
    async with client_for(create_app(tight)) as client:
        limits = (await client.get("/api/limits")).json()
        schema = (await client.get("/openapi.json")).json()
    assert limits == {
        "max_upload_bytes": tight.max_upload_bytes,
        "max_pixels": tight.max_pixels,
        "max_dimension": 4000,
        "max_frames": tight.max_frames,
        "max_steps": tight.max_steps,
        "max_sigma": 12.5,
        "batch_max_files": 7,
        "batch_max_bytes": tight.batch_max_bytes,
    }
    form = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["sigma"]["maximum"] == 12.5
    assert form["schema"]["properties"]["height"]["maximum"] == 4000
