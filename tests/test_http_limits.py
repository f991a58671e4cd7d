"""Hostile HTTP clients against a real API process (issue 11): header floods, slow headers and
bodies, connection floods, over-long URLs, and the small gaps (HEAD, plain-text errors).

Every refusal must be the API's JSON error and must close the connection. Deadlines are set
short through settings, and each test waits for the server's answer (a read that returns),
never for a time; a socket timeout is only a hang guard.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgstream.redis_server import RedisServer

from images import encode, photo
from service import Service, module_service

pytestmark = pytest.mark.slow

GUARD = 60.0
"""Seconds a socket read may block before the test calls it a hang."""
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "http",
        1,
        clean_exit=False,
        IMGSTREAM_HTTP_HEADER_TIMEOUT="1",
        IMGSTREAM_HTTP_BODY_WINDOW="1",
        IMGSTREAM_HTTP_MIN_BODY_RATE="1000",
        IMGSTREAM_HTTP_KEEPALIVE_TIMEOUT="1",
        IMGSTREAM_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        IMGSTREAM_CORS_ORIGINS="https://allowed.example",
    )


def address(service: Service) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(service: Service) -> socket.socket:
    return socket.create_connection(address(service), timeout=GUARD)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes: status, headers, body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def refused(sock: socket.socket, status: int, code: str) -> dict[str, Any]:
    got, headers, body = read_answer(sock)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    return error


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a reset: the server may refuse and close before taking it all."""
    with suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def test_headers_too_large_get_431(service: Service) -> None:
    with closing(connect(service)) as sock:
        send_all(
            sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        )
        message = refused(sock, 431, "headers_too_large")["message"]
    assert "IMGSTREAM_HTTP_MAX_HEADER_BYTES" in message


def test_too_many_header_fields_get_431(service: Service) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % n for n in range(1000))
    with closing(connect(service)) as sock:
        send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert "IMGSTREAM_HTTP_MAX_HEADERS" in refused(sock, 431, "headers_too_large")["message"]


@pytest.mark.parametrize("length", [20_000, 100_000])
def test_an_over_long_url_gets_414(service: Service, length: int) -> None:
    with closing(connect(service)) as sock:
        send_all(sock, b"GET /" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert "IMGSTREAM_HTTP_MAX_URL_BYTES" in refused(sock, 414, "uri_too_long")["message"]


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_headers_never_finished_get_408_and_lose_the_connection(
    service: Service, sent: bytes
) -> None:
    with closing(connect(service)) as sock:
        sock.sendall(sent)
        refused(sock, 408, "request_timeout")


def test_a_body_trickled_in_gets_408(service: Service) -> None:
    head = (
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    with closing(connect(service)) as sock:
        sock.sendall(head + b"--b\r\n")
        message = refused(sock, 408, "request_timeout")["message"]
    assert "IMGSTREAM_HTTP_MIN_BODY_RATE" in message
    assert "limit.http" in service.log.read_text()


def test_an_idle_keep_alive_connection_is_closed(service: Service) -> None:
    with closing(connect(service)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_answer(sock)  # returns once the server closes the connection
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_connections_past_the_cap_get_503_and_the_service_still_answers(service: Service) -> None:
    held = [connect(service) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each is in the server's hands once it answers a request
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with closing(connect(service)) as extra:
            assert "IMGSTREAM_HTTP_MAX_CONNECTIONS" in refused(extra, 503, "busy")["message"]
    finally:
        for sock in held:
            sock.close()
    for _ in range(200):  # the server notices the closes on its own schedule
        if httpx.get(f"{service.url}/healthz", timeout=GUARD).status_code == 200:
            break
    assert httpx.get(f"{service.url}/healthz", timeout=GUARD).json() == {"status": "ok"}


def test_a_malformed_request_gets_json_400(service: Service) -> None:
    with closing(connect(service)) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        refused(sock, 400, "bad_request")


def test_head_works_on_get_routes(service: Service) -> None:
    job = service.submit(encode(photo(40, 30), "png"), "a.png", operation="grayscale")
    job_id = job.json()["id"]
    service.wait(job_id)
    for path in ("/healthz", "/api/limits", f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/result",
                 f"/api/jobs/{job_id}/events", "/"):  # fmt: skip
        got = service.http.get(path)
        head = service.http.head(path)
        assert head.status_code == got.status_code == 200, (path, head.text)
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    missing = service.http.head(f"/api/jobs/{'0' * 32}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


def test_framework_errors_are_json(service: Service) -> None:
    job_id = service.submit(encode(photo(40, 30), "png"), "a.png", operation="grayscale").json()[
        "id"
    ]
    service.wait(job_id)
    answers = {
        "unknown route": service.http.get("/no/such/route"),
        "wrong method": service.http.put("/healthz"),
        "bad range": service.http.get(
            f"/api/jobs/{job_id}/result", headers={"Range": "bytes=oops"}
        ),
        "unsatisfiable range": service.http.get(
            f"/api/jobs/{job_id}/result", headers={"Range": "bytes=99999999-"}
        ),
        "disallowed preflight": service.http.options(
            "/api/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ),
    }
    for what, answer in answers.items():
        assert answer.status_code >= 400, (what, answer.status_code)
        assert answer.headers["content-type"] == "application/json", (what, answer.text)
        body = answer.json()
        assert set(body["error"]) == {"code", "message"}, (what, body)


def test_nothing_went_to_a_traceback(service: Service, tmp_path: Path) -> None:
    assert "Traceback" not in service.log.read_text()
