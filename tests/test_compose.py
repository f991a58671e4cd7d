"""The compose file and the image, read as Compose and Docker would (no Docker needed), and
the worker's health check run for real against live and missing workers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from imgstream.cli import build_parser
from imgstream.redis_server import RedisServer

from service import Service, service_env

ROOT = Path(__file__).resolve().parent.parent
OURS = ("api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document["services"]


def test_every_service_restarts_and_our_image_is_built_never_pulled(
    compose: dict[str, Any],
) -> None:
    for name, service in compose.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
    images = {compose[name]["image"] for name in OURS}
    assert len(images) == 1, "the API and the workers run one image"
    for name in OURS:
        assert "build" in compose[name], f"{name} must say how its image is built"
        assert compose[name].get("pull_policy") in ("build", "never"), name


def test_the_worker_has_a_health_check_of_its_own_and_it_is_a_real_command(
    compose: dict[str, Any],
) -> None:
    check = compose["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "imgstream"
    assert "healthz" not in " ".join(check)  # not the image's HTTP check: a worker has no port
    arguments = build_parser().parse_args(check[2:])
    assert arguments.command == "health"
    assert "healthz" in " ".join(compose["api"]["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile  # the API's, by default


def test_both_parts_share_redis_and_the_images_volume(compose: dict[str, Any]) -> None:
    urls = {compose[name]["environment"]["REDIS_URL"] for name in OURS}
    assert urls == {"redis://redis:6379/0"}
    for name in OURS:
        assert "images:/data" in compose[name]["volumes"]
        assert compose[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def health(env: dict[str, str], within: str = "30") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgstream", "health", "--within", within],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_the_worker_check_is_true_exactly_while_a_worker_here_beats(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"health-{uuid.uuid4().hex[:8]}"
    nobody = health(service_env(redis_server.url, tmp_path / "data", prefix))
    assert nobody.returncode == 1 and "no worker on this host" in nobody.stderr
    service = Service.launch(redis_server.url, tmp_path / "data", prefix, concurrency=1)
    try:
        deadline = time.monotonic() + 60
        while (alive := health(service.env)).returncode != 0:  # until its first beat
            assert time.monotonic() < deadline, alive.stderr
    finally:
        service.close()
    gone = health(service.env)  # a worker that stopped cleanly leaves the presence set
    assert gone.returncode == 1
    down = health({**service.env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.returncode == 1  # Redis unreachable: not healthy, and no traceback
    assert "Traceback" not in down.stderr
