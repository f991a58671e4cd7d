"""The compose files and the image, read as Compose and Docker would (no Docker needed;
`docker compose config` too when it is there), the load balancer's configuration checked by
HAProxy itself when it is installed, and the worker's health check run for real against live
and missing workers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from imgstream.cli import build_parser
from imgstream.config import Settings
from imgstream.redis_server import RedisServer

from service import Service, service_env

ROOT = Path(__file__).resolve().parent.parent
OURS = ("api", "worker")
FILES = ("docker-compose.yml", "docker-compose.cluster.yml")
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
ISSUE_13_SETTINGS = {
    "IMGSTREAM_REDIS_CLUSTER", "IMGSTREAM_PARTITIONS", "IMGSTREAM_STORAGE", "IMGSTREAM_S3_BUCKET",
    "IMGSTREAM_S3_ENDPOINT_URL", "IMGSTREAM_REDIS_WAIT_REPLICAS",
}  # fmt: skip
"""Settings of issue 13 that other branches add; until they land, Settings ignores them."""


def services_of(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())["services"]
    return services


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document["services"]


@pytest.mark.parametrize("file", FILES)
def test_every_service_restarts_and_our_image_is_built_never_pulled(file: str) -> None:
    compose = services_of(file)
    for name, service in compose.items():
        if service.get("restart") == "no":  # a one-shot: what needs it waits for its success
            waiting = [s for s in compose.values() if name in s.get("depends_on", {})]
            assert waiting, f"{name} runs once and nothing waits for it"
            for other in waiting:
                condition = other["depends_on"][name]["condition"]
                assert condition == "service_completed_successfully", name
            continue
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        assert "healthcheck" in service, f"{name} has no health check"
    images = {compose[name]["image"] for name in OURS}
    assert len(images) == 1, "the API and the workers run one image"
    for name in OURS:
        assert "build" in compose[name], f"{name} must say how its image is built"
        assert compose[name].get("pull_policy") in ("build", "never"), name


@pytest.mark.parametrize("file", FILES)
def test_every_reference_names_a_service_or_a_file_that_exists(file: str) -> None:
    compose = services_of(file)
    for name, service in compose.items():
        assert set(service.get("depends_on", {})) <= set(compose), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name in OURS:
        env = compose[name]["environment"]
        ours = {key for key in env if key.startswith("IMGSTREAM_")}
        known = {f"IMGSTREAM_{field.upper()}" for field in Settings.model_fields}
        assert ours - known <= ISSUE_13_SETTINGS, ours - known - ISSUE_13_SETTINGS
        host = re.match(r"redis://([^:/]+)", env["REDIS_URL"])
        assert host and host.group(1) in compose, env["REDIS_URL"]


@pytest.mark.parametrize("file", FILES)
def test_a_load_balancer_on_port_3000_fronts_the_api_replicas(file: str) -> None:
    compose = services_of(file)
    lb, api = compose["lb"], compose["api"]
    assert lb["image"].startswith("haproxy:")  # the official image
    assert lb["ports"] == ["3000:3000"]
    assert "ports" not in api, "only the load balancer is published"
    assert api["deploy"]["replicas"] >= 2
    assert f"./deploy/haproxy.cfg:{HAPROXY_IN_IMAGE}:ro" in lb["volumes"]
    config = HAPROXY_CFG.read_text()
    assert re.search(r"^\s*bind :3000$", config, re.MULTILINE)
    assert re.search(r"^\s*server-template api \S+ api:3000$", config, re.MULTILINE)
    assert api["environment"]["IMGSTREAM_FORWARDED_ALLOW_IPS"] == "*"  # only HAProxy reaches it


def test_the_cluster_file_runs_a_redis_cluster_with_replicas_and_an_s3_server() -> None:
    compose = services_of("docker-compose.cluster.yml")
    nodes = sorted(name for name in compose if re.fullmatch(r"redis-\d", name))
    assert len(nodes) == 6
    for name in nodes:
        assert "--cluster-enabled yes" in " ".join(compose[name]["command"])
    create = " ".join(compose["redis-cluster-create"]["command"])
    assert "--cluster create" in create and "--cluster-replicas 1" in create
    joined = re.search(r"for n in ([\d ]+); do .*getent hosts redis-\$\$n", create)
    assert joined, create  # every node, by the address its name resolves to
    assert sorted(f"redis-{n}" for n in joined.group(1).split()) == nodes
    assert compose["s3"]["image"].startswith("chrislusf/seaweedfs")
    for name in OURS:
        env = compose[name]["environment"]
        assert env["IMGSTREAM_REDIS_CLUSTER"] == "true"
        assert int(env["IMGSTREAM_PARTITIONS"]) > 1
        assert env["IMGSTREAM_STORAGE"] == "s3"
        assert env["IMGSTREAM_S3_ENDPOINT_URL"] == "http://s3:8333"
        assert f"-name {env['IMGSTREAM_S3_BUCKET']}" in " ".join(
            compose["s3-bucket-create"]["entrypoint"]
        )
        assert "volumes" not in compose[name], "nothing passes through a shared disk"


def docker_compose() -> list[str]:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here: the compose files were checked as YAML only")
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no Compose plugin: checked as YAML only")
    return ["docker", "compose"]


@pytest.mark.parametrize("file", FILES)
def test_docker_compose_accepts_the_file(file: str) -> None:
    command = docker_compose()
    checked = subprocess.run(
        [*command, "-f", str(ROOT / file), "config", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


HAPROXY_IN_IMAGE = "/usr/local/etc/haproxy/haproxy.cfg"
ERRORS_IN_IMAGE = "/usr/local/etc/haproxy/errors"


def haproxy_config_here() -> str:
    """deploy/haproxy.cfg with the image's paths replaced by the repository's files."""
    return HAPROXY_CFG.read_text().replace(ERRORS_IN_IMAGE, str(ROOT / "deploy/haproxy-errors"))


def test_haproxy_accepts_its_configuration_and_its_503_is_our_json(tmp_path: Path) -> None:
    lb = services_of("docker-compose.yml")["lb"]
    assert f"./deploy/haproxy-errors:{ERRORS_IN_IMAGE}:ro" in lb["volumes"]
    raw = (ROOT / "deploy/haproxy-errors/503.http").read_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["code"] == "unavailable"
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not on PATH: its configuration was read, not checked by it")
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config_here())
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


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
