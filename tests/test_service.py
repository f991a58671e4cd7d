"""End to end: real API and worker processes, real HTTP, real Redis, real pixels."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
import redis

from imgstream.operations import parse_operations_json
from imgstream.redis_server import RedisServer, free_port

import reference
from images import bars, encode, photo
from service import Service, module_service, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "e2e",
        IMGSTREAM_MAX_UPLOAD_BYTES=str(1024 * 1024),
        IMGSTREAM_BATCH_MAX_FILES="2",
    )


CASES = [
    # source, operations, output format, mean difference allowed: lossless, rounding only;
    # lossy, the encoders too (a wrong crop or kernel is several times as far)
    ("png", '[{"op":"resize","width":80}]', "png", 1.0),
    ("png", '[{"op":"resize","width":60,"height":60,"fit":"cover"}]', "png", 1.0),
    ("png", '[{"op":"resize","width":60,"height":40,"fit":"fill"}]', "png", 1.0),
    ("png", '[{"op":"grayscale"}]', "png", 0.01),
    ("bars", '[{"op":"blur","sigma":3}]', "png", 1.0),
    ("bars", '[{"op":"resize","width":100},{"op":"grayscale"},{"op":"blur","sigma":2}]', "", 1.0),
    ("jpeg", '[{"op":"resize","width":80}]', "", 5.0),
    ("webp", '[{"op":"resize","width":60,"height":60,"fit":"cover"},{"op":"grayscale"}]',
     "jpeg", 5.0),
]  # fmt: skip
"""One case at least of every operation, compared with ``reference`` (Pillow and numpy)."""


def test_results_match_an_independent_reference(service: Service) -> None:
    submitted = []
    for index, (source, operations, output, tolerance) in enumerate(CASES):
        fmt = "png" if source == "bars" else source
        original = encode((bars if source == "bars" else photo)(160, 120), fmt)
        fields = {"operations": operations, **({"format": output} if output else {})}
        response = service.submit(original, f"img{index}.{fmt}", **fields)
        assert response.status_code == 202, response.text
        submitted.append((response.json()["id"], original, operations, output or fmt, tolerance))

    for job_id, original, operations, output, tolerance in submitted:
        job = service.wait(job_id)
        assert job["status"] == "done", job
        result = service.http.get(job["result"]["url"])
        assert result.status_code == 200
        assert result.headers["content-type"] == f"image/{output}"
        got = reference.pixels(result.content)
        want = reference.apply(parse_operations_json(operations), reference.pixels(original))
        assert (job["result"]["width"], job["result"]["height"]) == (want.shape[1], want.shape[0])
        assert job["result"]["format"] == output
        margin = 8 if "blur" in operations else 0  # edge handling is not part of the promise
        assert reference.mean_difference(got, want, margin) < tolerance, operations


def test_a_failing_image_does_not_stop_the_worker(service: Service) -> None:
    broken = encode(photo(400, 300), "png")[:2000]  # a sound header: only decoding fails
    bad = service.submit(broken, "broken.png", operation="grayscale")
    good = service.submit(encode(photo(50, 40), "png"), "good.png", operation="grayscale")
    assert (bad.status_code, good.status_code) == (202, 202), bad.text
    failed = service.wait(bad.json()["id"])
    assert (failed["status"], failed["error_code"]) == ("failed", "decode_error"), failed
    assert service.http.get(f"/api/jobs/{failed['id']}/result").status_code == 409
    assert service.wait(good.json()["id"])["status"] == "done"


def test_upload_over_the_limit_is_refused_while_streaming(service: Service) -> None:
    """A chunked upload with no length is cut off at the limit, long before it ends."""
    host, port = service.url.removeprefix("http://").split(":")
    boundary = "imgstreamboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operation"\r\n\r\ngrayscale\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    chunk = b"\0" * 65536
    sent = 0
    originals_before = set((service.data_dir / "originals").iterdir())
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /api/jobs HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        connection.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        connection.settimeout(0.01)
        answer = b""
        with contextlib.suppress(OSError):  # the server may stop reading or close early
            while sent < 64 * 1024 * 1024 and b"\r\n\r\n" not in answer:
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                with contextlib.suppress(TimeoutError):
                    answer += connection.recv(65536)
        connection.settimeout(30)
        while not _complete(answer):
            received = connection.recv(65536)
            if not received:
                break
            answer += received
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(body)["error"]["code"] == "too_large", answer[:400]
    assert sent < 8 * 1024 * 1024  # judged at ~1 MiB, not after reading 64 MiB
    assert set((service.data_dir / "originals").iterdir()) == originals_before


def _complete(answer: bytes) -> bool:
    """An HTTP answer whose head and whole ``content-length`` body have arrived."""
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


def test_a_producer_with_nothing_but_a_redis_client(
    service: Service, redis_server: RedisServer
) -> None:
    """Exactly what docs/wire-format.md tells another language to do: no project code."""
    job_id = uuid.uuid4().hex
    original = encode(photo(120, 90), "png")
    (service.data_dir / "originals" / job_id).write_bytes(original)
    raw = redis.Redis.from_url(redis_server.url)
    raw.execute_command(
        "XADD", "{" + service.prefix + "}:jobs", "*",
        "job", job_id, "operations", '[{"op":"resize","width":60}]', "format", "webp",
    )  # fmt: skip
    raw.close()
    job = service.wait(job_id)
    assert job["status"] == "done", job
    assert (job["result"]["width"], job["result"]["height"], job["result"]["format"]) == (
        60,
        45,
        "webp",
    )
    assert service.http.get(job["result"]["url"]).status_code == 200


def test_cli_submit_and_status(service: Service, tmp_path: Path) -> None:
    sources = [tmp_path / "holiday photo.png", tmp_path / "beach.jpg"]
    sources[0].write_bytes(encode(photo(200, 100), "png"))
    sources[1].write_bytes(encode(photo(300, 150), "jpeg"))
    target = tmp_path / "out"
    env = {**service.env, "IMGSTREAM_LOG_LEVEL": "INFO"}  # the libraries stay quiet even so
    archive = tmp_path / "all.zip"
    completed = subprocess.run(
        [sys.executable, "-m", "imgstream", "submit", *map(str, sources), "--op", "resize",
         "--width", "50", "--format", "webp", "-o", str(target), "--zip", str(archive),
         "--url", service.url],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert f"API: {service.url} (--url)" in completed.stderr
    assert "HTTP Request" not in completed.stderr and "httpx" not in completed.stderr
    job_ids = [line.split("queued as job ")[1] for line in completed.stderr.splitlines()
               if "queued as job " in line]  # fmt: skip
    assert len(job_ids) == 2
    summary = completed.stdout.splitlines()
    assert len(summary) == 2
    for source, job_id, line, size in zip(sources, job_ids, summary, [(50, 25), (50, 25)],
                                          strict=True):  # fmt: skip
        saved = target / f"{source.stem}-{job_id[:8]}.webp"
        image = pyvips.Image.new_from_file(str(saved))
        assert (image.width, image.height) == size
        assert line.startswith(f"{source} → {saved}  50x25 webp, ")
        assert line.endswith(f"{service.url}/api/jobs/{job_id}/result")
    with zipfile.ZipFile(archive) as results:
        assert results.namelist() == ["holiday_photo.webp", "beach.webp"]
        for name, source, job_id in zip(results.namelist(), sources, job_ids, strict=True):
            saved = target / f"{source.stem}-{job_id[:8]}.webp"
            assert results.read(name) == saved.read_bytes()
    status = subprocess.run(
        [sys.executable, "-m", "imgstream", "status", job_ids[0], "--url", service.url],
        env=service.env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["status"] == "done"


def test_cli_submit_with_an_idempotency_key_reruns_without_new_jobs(
    service: Service, tmp_path: Path
) -> None:
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    for number, source in enumerate(sources):
        source.write_bytes(encode(photo(40 + number, 30), "png"))

    def run() -> list[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "imgstream", "submit", *map(str, sources), "--op",
             "grayscale", "--idempotency-key", "nightly-42", "-o", str(tmp_path / "out"),
             "--url", service.url],
            env=service.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        return [line.split("queued as job ")[1] for line in completed.stderr.splitlines()
                if "queued as job " in line]  # fmt: skip

    first = run()
    assert len(set(first)) == 2
    assert run() == first


def test_cli_submit_splits_more_files_than_a_batch_holds(service: Service, tmp_path: Path) -> None:
    sources = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for number, source in enumerate(sources):
        source.write_bytes(encode(photo(40 + number, 30), "png"))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imgstream", "submit", *map(str, sources), "--op",
             "grayscale", "-o", str(tmp_path / "out"), "--url", service.url, *extra],
            env=service.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    # The service's batches hold two images (from GET /api/limits): two batches, 2 + 1.
    completed = run("--idempotency-key", "split-1")
    assert completed.returncode == 0, completed.stderr
    batches = re.findall(r"(\d) images: queued as batch (\w+)", completed.stderr)
    assert [count for count, _ in batches] == ["2", "1"]
    for _, batch_id in batches:
        assert service.http.get(f"/api/batches/{batch_id}").json()["status"] == "done"
    assert len(completed.stdout.splitlines()) == 3
    # A rerun with the same key makes nothing new: each part has its own key.
    again = run("--idempotency-key", "split-1")
    assert re.findall(r"queued as batch (\w+)", again.stderr) == [b for _, b in batches]
    # One ZIP holds one batch: refused up front, nothing uploaded.
    refused = run("--zip", str(tmp_path / "all.zip"))
    assert refused.returncode != 0
    assert "--zip: 3 files make 2 batches" in refused.stderr
    assert "queued" not in refused.stderr


def test_cli_help_is_written_for_users() -> None:
    from imgstream.cli import build_parser

    shown = subprocess.run(
        [sys.executable, "-m", "imgstream", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "argument parsing and wiring" not in shown  # the module's docstring
    assert "imgstream up" in shown and "imgstream submit photo.jpg" in shown
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        assert command.description, name
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                assert action.help, f"imgstream {name} {action.dest}"


def test_cli_submit_draws_one_progress_bar_for_a_batch_on_a_terminal(
    service: Service, tmp_path: Path
) -> None:
    sources = [tmp_path / "one.png", tmp_path / "two.png"]
    for source in sources:
        source.write_bytes(encode(photo(80, 60), "png"))
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "imgstream", "submit", *map(str, sources), "--op", "grayscale",
         "--url", service.url],
        env={**service.env, "COLUMNS": "120", "IMGSTREAM_LOG_LEVEL": "INFO"},
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    shown = b""
    with contextlib.suppress(OSError):  # the terminal closes when the command exits
        while chunk := os.read(leader, 65536):
            shown += chunk
    os.close(leader)
    assert process.wait(30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert re.search(r"✓ 2 images ━+ done: 2 done, 0 failed", text), text[-2000:]
    for source in sources:
        assert f"{source.name}: done, saved" in text
        assert not re.search(rf"{source.name} ━", text)  # the batch's bar, none per file
    assert "HTTP Request" not in text


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment mentions ``marker`` (our private data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (
                marker.encode() in (entry / "environ").read_bytes()
                or marker.encode() in (entry / "cmdline").read_bytes()
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_up_runs_everything_and_leaves_nothing_behind(tmp_path: Path, stop_signal: int) -> None:
    data_dir = tmp_path / f"up-data-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("IMGSTREAM_") and k != "REDIS_URL"
    }
    env.update(
        {
            "IMGSTREAM_DATA_DIR": str(data_dir),
            "IMGSTREAM_PORT": str(port),
            "IMGSTREAM_CONCURRENCY": "1",
        }
    )
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "imgstream", "up"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # `up` says so only once the API answers and workers read
        while "imgstream is up" not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert len(processes_with(str(data_dir))) >= 4  # up, redis, api, worker pool (+ workers)
        response = httpx.post(
            f"{url}/api/jobs",
            files={"image": ("a.png", encode(photo(64, 64), "png"))},
            data={"operation": "grayscale"},
        )
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/api/jobs/{response.json()['id']}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert (data_dir / "redis" / "appendonlydir").is_dir() or (
            data_dir / "redis" / "appendonly.aof"
        ).exists()
    finally:
        status = stop(up, stop_signal)
    output = log.read_text()
    assert status == (-signal.SIGKILL if stop_signal == signal.SIGKILL else 0), output
    deadline = time.monotonic() + 15  # even a SIGKILLed `up` takes its children with it
    while processes_with(str(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(str(data_dir)) == []


def test_cli_sends_its_key_and_waits_out_429(redis_server: RedisServer, tmp_path: Path) -> None:
    key = "k" * 24
    service = Service.launch(
        redis_server.url, tmp_path / "data", f"cli-{uuid.uuid4().hex[:8]}", concurrency=1,
        IMGSTREAM_API_KEYS=key, IMGSTREAM_RATE_LIMIT_PER_SECOND="0.1",
        IMGSTREAM_RATE_LIMIT_BURST="2",
    )  # fmt: skip
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    for source in sources:
        source.write_bytes(encode(photo(40, 30), "png"))

    def submit(env_key: str | None, *files: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in service.env.items() if k != "IMGSTREAM_API_KEY"}
        if env_key:
            env["IMGSTREAM_API_KEY"] = env_key
        return subprocess.run(
            [sys.executable, "-m", "imgstream", "submit", *map(str, files), "--op",
             "grayscale", "-o", str(tmp_path / "out"), "--url", service.url],
            env=env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip

    try:
        refused = submit(None, *sources)
        first = submit(key, *sources)  # a batch of two empties the key's bucket
        waited = submit(key, *sources)  # so this one meets a 429 (a token takes 10 s)
    finally:
        service.close()
    assert refused.returncode == 1 and "401" in refused.stdout
    assert first.returncode == 0, first.stderr
    assert waited.returncode == 0, waited.stderr
    assert "answered 429; retrying" in waited.stderr
