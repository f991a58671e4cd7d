"""The toolbox end to end: through the API, a raw XADD stream entry and the CLI, with real
API and worker processes, real Redis and real pixels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from imgstream import imaging
from imgstream.operations import Limits, spec_from_form
from imgstream.redis_server import RedisServer

from images import encode, photo, with_alpha
from service import Service, module_service

pytestmark = pytest.mark.slow

CHAIN = json.dumps([
    {"op": "crop", "left": 10, "top": 10, "width": 200, "height": 120},
    {"op": "rotate", "angle": 90},
    {"op": "resize", "width": 100, "height": 100, "fit": "contain", "background": "#00ff00"},
    {"op": "adjust", "saturation": 0.5, "contrast": 1.2},
    {"op": "sharpen", "sigma": 1},
])  # fmt: skip


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "toolbox",
        1,
    )


def test_a_chain_of_new_steps_through_the_api(service: Service) -> None:
    original = with_alpha(photo(240, 160), 255)
    fields = {"operations": CHAIN, "format": "webp", "quality": "70"}
    accepted = service.submit(original, "photo.png", **fields)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    first = service.http.get(f"/api/jobs/{job_id}").json()
    assert first["original"] == {
        "width": 240, "height": 160, "format": "png", "has_alpha": True, "pages": 1
    }  # fmt: skip
    assert (first["quality"], first["max_bytes"], first["strip"]) == (70, None, True)

    job = service.wait(job_id)
    assert job["status"] == "done", job
    result = job["result"]
    assert (result["width"], result["height"], result["format"]) == (100, 100, "webp")
    placeholder = result["placeholder"]
    assert len(placeholder["blurhash"]) == 28 and placeholder["thumbhash"]
    assert placeholder["dominant_color"].startswith("#") and len(placeholder["dominant_color"]) == 7
    served = service.http.get(result["url"]).content
    expected = imaging.render(original, spec_from_form(fields, Limits()), Limits()).data
    difference = np.abs(decoded(served) - decoded(expected)).mean()
    assert difference < 1.0


def decoded(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def test_a_crop_outside_the_upload_is_a_422_and_nothing_is_kept(service: Service) -> None:
    before = set((service.data_dir / "originals").iterdir())
    refused = service.submit(
        encode(photo(80, 60), "png"), "small.png",
        operation="crop", left="50", width="40", height="10",
    )  # fmt: skip
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == {
        "code": "invalid_parameters",
        "message": "the crop box 40x10 at (50, 0) reaches outside the 80x60 image",
    }
    assert set((service.data_dir / "originals").iterdir()) == before


def test_a_crop_outside_the_image_at_its_step_fails_the_job_clearly(service: Service) -> None:
    chain = '[{"op":"resize","width":40},{"op":"crop","width":40,"height":40}]'
    accepted = service.submit(encode(photo(80, 60), "png"), "small.png", operations=chain)
    assert accepted.status_code == 202, accepted.text
    job = service.wait(accepted.json()["id"])
    assert (job["status"], job["error_code"]) == ("failed", "outside_image")
    assert "reaches outside the 40x30 image" in job["error"]


def test_an_unreachable_max_bytes_fails_the_job_clearly(service: Service) -> None:
    accepted = service.submit(
        encode(photo(300, 200), "png"), "p.png", operation="sharpen", format="jpeg",
        max_bytes="300",
    )  # fmt: skip
    job = service.wait(accepted.json()["id"])
    assert (job["status"], job["error_code"]) == ("failed", "max_bytes_unreachable")
    assert job["error"].startswith("max_bytes: even at quality 1 the JPEG result is")


def raw_xadd(
    service: Service, redis_server: RedisServer, original: bytes, *fields: str
) -> dict[str, Any]:
    """As docs/wire-format.md tells another language to do it, with no project code: store
    the original, add the stream entry; then the job once it has ended."""
    job_id = uuid.uuid4().hex
    (service.data_dir / "originals" / job_id).write_bytes(original)
    raw = redis.Redis.from_url(redis_server.url)
    raw.execute_command("XADD", "{" + service.prefix + "}:jobs", "*", "job", job_id, *fields)
    raw.close()
    return service.wait(job_id)


def test_a_raw_xadd_with_new_steps_and_output_options(
    service: Service, redis_server: RedisServer
) -> None:
    operations = '[{"op":"flip","direction":"horizontal"},{"op":"pixelate","size":8},{"op":"trim"}]'
    job = raw_xadd(
        service, redis_server, encode(photo(120, 90), "jpeg"),
        "operations", operations, "format", "avif", "quality", "40", "strip", "false",
    )  # fmt: skip
    assert job["status"] == "done", job
    assert job["result"]["format"] == "avif" and job["result"]["placeholder"]
    assert (job["quality"], job["strip"], job["original"]) == (40, False, None)
    assert service.http.get(job["result"]["url"]).content[4:12] == b"ftypavif"


def test_a_raw_xadd_with_a_bad_new_parameter_fails_with_its_name(
    service: Service, redis_server: RedisServer
) -> None:
    job = raw_xadd(
        service, redis_server, encode(photo(40, 30), "png"),
        "operations", '[{"op":"rotate","angle":45,"background":"blue"}]', "quality", "0",
    )  # fmt: skip
    assert (job["status"], job["error_code"]) == ("failed", "invalid_spec")
    assert "operations[0].background: must be a colour" in job["error"]


def test_cli_submit_with_new_steps(service: Service, tmp_path: Path) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(encode(photo(200, 100), "png"))
    target = tmp_path / "out.gif"
    completed = subprocess.run(
        [sys.executable, "-m", "imgstream", "submit", str(source), "--op", "crop",
         "--left", "20", "--top", "10", "--width", "64", "--height", "48", "--format", "gif",
         "-o", str(target), "--url", service.url],
        env=service.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    with Image.open(target) as image:
        assert (image.format, image.size) == ("GIF", (64, 48))
    refused = subprocess.run(
        [sys.executable, "-m", "imgstream", "submit", str(source), "--op", "rotate",
         "--url", service.url],
        env=service.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "angle: is required" in refused.stderr + refused.stdout
