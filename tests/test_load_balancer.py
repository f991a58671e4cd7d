"""The compose file's load balancer, for real: HAProxy with deploy/haproxy.cfg (its Docker
addresses replaced by loopback ones) in front of two API processes and, later, a worker.

A job uploaded through it is followed live through it: its first event arrives while the
job waits (HAProxy holds nothing back), its last one once a worker did it. A replica that
stops is routed around; with none left, HAProxy answers the API's JSON ``503``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from imgstream.redis_server import RedisServer, free_port
from test_compose import haproxy_config_here

from service import PNG, service_env, start, stop, wait_until_healthy

pytestmark = pytest.mark.slow


def loopback_config(port: int, stats_port: int, api_ports: list[int]) -> str:
    """deploy/haproxy.cfg on loopback: listeners on free ports, the two APIs as its servers."""
    config = haproxy_config_here()
    config = re.sub(r"\nresolvers docker\n(?:[ \t]+.*\n)+", "\n", config)
    config = config.replace(" resolvers docker init-addr none", "")
    servers = "\n".join(f"    server api{i} 127.0.0.1:{p}" for i, p in enumerate(api_ports))
    config, found = re.subn(r"^\s*server-template api .*$", servers, config, flags=re.MULTILINE)
    assert found == 1
    config = config.replace("bind :3000", f"bind 127.0.0.1:{port}")
    config = config.replace("bind :8404", f"bind 127.0.0.1:{stats_port}")
    assert "nameserver" not in config and re.search(r"bind :\d", config) is None
    return config


def until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def answers(url: str, status: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == status
        except httpx.TransportError:
            return False

    return check


def status_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def test_haproxy_balances_the_apis_streams_events_unbuffered_and_answers_json_when_all_are_down(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not on PATH (make test installs it where it may)")
    prefix = f"lb-{uuid.uuid4().hex[:8]}"
    env = service_env(redis_server.url, tmp_path / "data", prefix)
    (tmp_path / "data").mkdir()
    log = tmp_path / "service.log"
    api_ports = [free_port(), free_port()]
    port, stats_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(loopback_config(port, stats_port, api_ports))
    lb_url = f"http://127.0.0.1:{port}"
    apis = [start(["api"], {**env, "IMGSTREAM_PORT": str(p)}, log) for p in api_ports]
    with (tmp_path / "haproxy.log").open("wb") as sink:
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=sink, stderr=sink)
    worker = None
    try:
        for api, api_port in zip(apis, api_ports, strict=True):
            wait_until_healthy(f"http://127.0.0.1:{api_port}", api)
        routes = answers(f"{lb_url}/healthz", 200)
        until("HAProxy to route", lambda: haproxy.poll() is not None or routes())
        assert haproxy.poll() is None, (tmp_path / "haproxy.log").read_text()
        with httpx.Client(base_url=lb_url, timeout=30) as http:
            accepted = http.post(
                "/api/jobs", files={"image": ("a.png", PNG)}, data={"operation": "grayscale"}
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = status_events(response.iter_lines())
                # No worker yet: this arrives only if HAProxy passes the open stream through.
                assert next(events)["status"] == "queued"
                worker = start(["worker", "--concurrency", "1"], env, log)
                seen = [event["status"] for event in events]
            assert seen[-1] == "done", seen
            assert http.get(f"/api/jobs/{job_id}/result").status_code == 200

            stop(apis[0])  # a refused connection is redispatched to the other replica
            for _ in range(10):
                assert http.get(f"/api/jobs/{job_id}").json()["status"] == "done"
            stop(apis[1])
            until("HAProxy to see no replica up", answers(f"{lb_url}/api/jobs/{job_id}", 503))
            down = http.get(f"/api/jobs/{job_id}")
            assert down.headers["content-type"] == "application/json"
            assert down.json()["error"]["code"] == "unavailable"
            assert down.headers["retry-after"]
        metrics = httpx.get(f"http://127.0.0.1:{stats_port}/metrics", timeout=10)
        assert "haproxy_backend_status" in metrics.text  # the stats port's Prometheus page
    finally:
        if worker is not None:
            stop(worker)
        for api in apis:
            stop(api)
        stop(haproxy)
