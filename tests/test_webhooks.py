"""Webhooks: the URL guard on literal addresses (no traffic), signatures, and delivery end to
end (real Redis, a real worker, a listener on 127.0.0.1 with private targets allowed)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest
from pydantic import SecretStr

from imgstream.api import create_app
from imgstream.config import Settings
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.webhook_queue import WebhookQueue
from imgstream.webhook_sender import WebhookSender
from imgstream.webhooks import (
    MAX_BACKOFF,
    RefusedUrl,
    address_refusal,
    backoff,
    parse_url,
    resolve,
    signature,
    verify,
)

from images import encode, photo
from inprocess import assert_error, client_for, drain

SECRET = "whsec-test-0123456789"
JPEG = encode(photo(64, 48), "jpeg")

REFUSED_ADDRESSES = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "0.0.0.0",  # unspecified
    "10.1.2.3",  # private
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",  # shared (carrier-grade NAT)
    "169.254.169.254",  # link-local (cloud metadata)
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "192.0.0.8",  # IETF protocol assignments
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
]
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_every_non_public_range_is_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(RefusedUrl, match="IMGSTREAM_WEBHOOK_ALLOW_PRIVATE"):
        resolve(parse_url(f"https://{host}/hook"), allow_private=False)


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    target = parse_url(f"https://{host}:8443/hook?x=1")
    assert resolve(target, allow_private=False) == [ipaddress.ip_address(address)]
    assert target.path == "/hook?x=1" and target.port == 8443


def test_private_addresses_pass_when_allowed() -> None:
    assert resolve(parse_url("http://127.0.0.1:9/"), allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://",
        "https://user:pw@example.com/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\u00e9",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(RefusedUrl):
        parse_url(url)


def test_a_signature_verifies_and_a_changed_body_or_old_one_does_not() -> None:
    body = b'{"id":"x","status":"done"}'
    header = signature(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify("another-secret", header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)
    assert not verify(SECRET, "garbage", body, now=1_700_000_000)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff(100, 2.0) == MAX_BACKOFF


# Through the API and a worker.


@dataclass
class Listener:
    """An HTTP receiver on 127.0.0.1 answering the scripted statuses, then 200."""

    statuses: list[int]
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/imgstream?source=test"


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener(statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            found.calls.append((dict(self.headers.items()), body))
            status = found.statuses.pop(0) if found.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def hooked(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET),
            "webhook_allow_private": True,
            "webhook_backoff": 0.01,
            **changes,
        }
    )


async def send_until(sender: WebhookSender, done: Callable[[], bool]) -> None:
    """Run the sender until ``done()`` holds (a generous deadline, never a fixed pause)."""
    with anyio.fail_after(60):
        while not done():
            if not await sender.send_due():
                await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_a_failed_call_is_retried_and_its_signature_verifies(
    settings: Settings, queue: JobQueue, listener: Listener
) -> None:
    settings = hooked(settings)
    listener.statuses = [500]
    async with client_for(create_app(settings)) as client:
        response = await client.post(
            "/api/jobs",
            files={"image": ("photo.jpg", JPEG)},
            data={"operation": "grayscale", "callback_url": listener.url},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await drain(settings, queue)
        webhooks = WebhookQueue(queue.redis, queue.keys)
        sender = WebhookSender(settings, queue, webhooks)
        await send_until(sender, lambda: len(listener.calls) >= 2)
        status = (await client.get(f"/api/jobs/{job_id}")).json()
    assert len(listener.calls) == 2
    for headers, body in listener.calls:
        assert verify(SECRET, headers["Imgstream-Signature"], body, now=int(time.time()))
        assert headers["Content-Type"] == "application/json"
        assert headers["Host"] == f"127.0.0.1:{listener.port}"
        assert json.loads(body) == status
    assert status["status"] == "done"
    assert await webhooks.pending() == 0
    assert await webhooks.undeliverable() == []


@pytest.mark.anyio
async def test_a_webhook_that_keeps_failing_is_listed_undeliverable(
    settings: Settings, queue: JobQueue, listener: Listener
) -> None:
    settings = hooked(settings, webhook_retry_for=0.0)
    listener.statuses = [503] * 10
    async with client_for(create_app(settings)) as client:
        response = await client.post(
            "/api/jobs",
            files={"image": ("photo.jpg", JPEG)},
            data={"operation": "grayscale", "callback_url": listener.url},
        )
        job_id = response.json()["id"]
        await drain(settings, queue)
        webhooks = WebhookQueue(queue.redis, queue.keys)
        sender = WebhookSender(settings, queue, webhooks)
        await send_until(sender, lambda: len(listener.calls) >= 1)
        (failure,) = await webhooks.undeliverable()
        assert failure.job == job_id and failure.url == listener.url
        assert "503" in failure.error and failure.attempts == 1
        assert await webhooks.pending() == 0
        stats = (await client.get("/api/stats")).json()
    assert stats["webhooks"]["undeliverable"][0]["job"] == job_id


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.0.1]/",
        "http://0.0.0.0:3000/",
        "not a url",
    ],
)
async def test_every_refused_url_is_a_422(settings: Settings, queue: JobQueue, url: str) -> None:
    settings = hooked(settings, webhook_allow_private=False)
    async with client_for(create_app(settings)) as client:
        response = await client.post(
            "/api/jobs",
            files={"image": ("photo.jpg", JPEG)},
            data={"operation": "grayscale", "callback_url": url},
        )
    assert_error(response, 422, "invalid_callback_url")
    assert await queue.backlog() == 0


@pytest.mark.anyio
async def test_without_a_secret_callbacks_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/jobs",
        files={"image": ("photo.jpg", JPEG)},
        data={"operation": "grayscale", "callback_url": "https://example.com/hook"},
    )
    assert_error(response, 422, "webhooks_disabled")


def test_the_webhook_keys_share_the_deployments_hash_tag() -> None:
    keys = Keys("p")
    assert {keys.webhooks, keys.webhook_attempts, keys.webhook_failures} == {
        "{p}:webhooks",
        "{p}:webhooks:attempts",
        "{p}:webhooks:undeliverable",
    }
