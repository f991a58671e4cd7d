"""The upload form over HTTP: every field it has, none it has not, and its OpenAPI description.

In-process against a real Redis, except the *Try it out* test, which submits the schema's
documented example to real API and worker processes as Swagger UI would send it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from imgstream.config import Settings
from imgstream.operations import FORM_FIELDS, OPERATION_NAMES
from imgstream.queue import JobQueue
from imgstream.redis_server import RedisServer

from images import encode, photo
from inprocess import assert_error, drain
from service import Service

PNG = encode(photo(64, 48), "png")


async def upload(client: httpx.AsyncClient, fields: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/jobs", files={"image": ("photo.png", PNG)}, data=fields)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"operation": "blur", "sigm": "40"}, "invalid_parameters",
         "sigm: unknown field; did you mean sigma?"),
        ({"operation": "grayscale", "width": "100"}, "invalid_parameters",
         "width: not a parameter of grayscale"),
        ({"operation": "grayscale", "Format": "png"}, "invalid_parameters",
         "Format: unknown field"),
        ({"operation": "blur", "sigma": "900"}, "invalid_parameters",
         "sigma: 900 is above the limit 100 (IMGSTREAM_MAX_SIGMA)"),
        ({"operations": '[{"op":"resize","width":800},{"op":"explode"}]'}, "invalid_parameters",
         "operations[1].op: unknown operation 'explode'; use one of resize, grayscale, blur, crop"),
        ({"operation": ["grayscale", "blur"]}, "invalid_request",
         "operation: given more than once"),
    ],
)  # fmt: skip
async def test_refusals_name_the_field(
    client: httpx.AsyncClient,
    settings: Settings,
    fields: dict[str, Any],
    code: str,
    says: str,
) -> None:
    message = assert_error(await upload(client, fields), 422, code)
    assert message.startswith(says), message
    assert list((settings.data_dir / "originals").iterdir()) == []


@pytest.mark.anyio
async def test_an_image_is_required_once_and_as_a_file(client: httpx.AsyncClient) -> None:
    missing = await client.post("/api/jobs", data={"operation": "grayscale"})
    assert assert_error(missing, 422, "invalid_request").startswith("image: required")
    as_text = await client.post("/api/jobs", data={"operation": "grayscale", "image": "a.png"})
    assert assert_error(as_text, 422, "invalid_request").startswith("image: must be the image file")
    twice = await client.post(
        "/api/jobs",
        files=[("image", ("a.png", PNG)), ("image", ("b.png", PNG))],
        data={"operation": "grayscale"},
    )
    assert_error(twice, 422, "invalid_request")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "output", "media_type", "extension"),
    [
        ("jpg", "jpeg", "image/jpeg", "jpg"),
        ("jpe", "jpeg", "image/jpeg", "jpg"),
        ("tif", "tiff", "image/tiff", "tif"),
        ("tiff", "tiff", "image/tiff", "tif"),
    ],
)
async def test_format_aliases_and_tiff_output(
    client: httpx.AsyncClient,
    settings: Settings,
    queue: JobQueue,
    name: str,
    output: str,
    media_type: str,
    extension: str,
) -> None:
    accepted = await upload(client, {"operation": "grayscale", "format": name})
    assert accepted.status_code == 202, accepted.text
    await drain(settings, queue)
    job = (await client.get(accepted.json()["links"]["self"])).json()
    assert job["status"] == "done", job
    assert job["format"] == output and job["result"]["format"] == output
    result = await client.get(job["result"]["url"])
    assert result.headers["content-type"] == media_type
    assert f'filename="photo.{extension}"' in result.headers["content-disposition"]
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert (image.width, image.height, image.bands) == (64, 48, 1)
    assert image.get("vips-loader") == f"{output}load_buffer"


@pytest.mark.anyio
async def test_the_form_schema_has_real_types_enums_and_no_null_unions(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/openapi.json")).json()["paths"]["/api/jobs"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    properties = schema["properties"]
    assert tuple(properties) == FORM_FIELDS and schema["required"] == ["image"]
    assert not any("anyOf" in field for field in properties.values())
    assert properties["operation"]["enum"] == list(OPERATION_NAMES)
    assert properties["format"]["enum"] == ["jpeg", "png", "webp", "avif", "gif", "tiff"]
    assert properties["fit"]["enum"] == ["inside", "cover", "fill", "contain"]
    assert properties["direction"]["enum"] == ["horizontal", "vertical"]
    assert (properties["width"]["type"], properties["width"]["maximum"]) == ("integer", 20_000)
    assert (properties["sigma"]["type"], properties["sigma"]["maximum"]) == ("number", 100.0)
    assert properties["enlarge"]["type"] == "boolean"


SWAGGER_TYPE_SAMPLES: dict[str, Any] = {
    "string": "string",
    "integer": 0,
    "number": 0,
    "boolean": True,
}
"""What Swagger UI pre-fills a field with when its schema gives no example, default or enum."""


def try_it_out_fields(properties: dict[str, Any]) -> dict[str, str]:
    """The text fields Swagger UI's *Try it out* sends as shipped: each field pre-filled with
    its first ``examples`` entry, else its ``default``, else its first ``enum`` value, else a
    sample of its type; fields left empty are not sent."""
    fields = {}
    for name, field in properties.items():
        if name == "image":
            continue
        if field.get("examples"):
            value = field["examples"][0]
        elif "default" in field:
            value = field["default"]
        elif field.get("enum"):
            value = field["enum"][0]
        else:
            value = SWAGGER_TYPE_SAMPLES[field.get("type", "string")]
        if value is None or value == "":
            continue
        fields[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return fields


@pytest.fixture
def service(redis_server: RedisServer, tmp_path: Path) -> Iterator[Service]:
    running = Service.launch(
        redis_server.url, tmp_path / "data", f"docs-{uuid.uuid4().hex[:8]}", concurrency=1
    )
    yield running
    running.close()


@pytest.mark.slow
def test_try_it_out_sends_the_documented_example_and_it_works(service: Service) -> None:
    schema = service.http.get("/openapi.json").json()
    body = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = try_it_out_fields(body["schema"]["properties"])
    assert fields["operation"] == "resize" and "operations" not in fields
    photo_1600 = encode(photo(1600, 1200), "jpeg")
    accepted = service.http.post(
        "/api/jobs", files={"image": ("photo.jpg", photo_1600, "image/jpeg")}, data=fields
    )
    assert accepted.status_code == 202, accepted.text
    job = service.wait(accepted.json()["id"])
    assert job["status"] == "done", job
    assert (job["result"]["width"], job["result"]["height"]) == (800, 600)
