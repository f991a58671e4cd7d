"""The web page and the dashboard in a real browser against a service that wants API keys.

The page asks for a key when the API answers 401, sends it as ``Authorization: Bearer`` on
every request (the event streams included: they are read with fetch, not EventSource), keeps
it out of every URL, and copes with jobs that another key cannot see. Shares test_browser's
Chromium set-up; screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request

from imgstream.redis_server import RedisServer
from test_browser import (
    ARTIFACTS,
    DESKTOP,
    EVENTS_PATH,
    JOB_PATH,
    Tab,
    card,
    natural_size,
    wait_for_cards,
)

# test_browser's fixtures, shared ("as" marks them as meant: pytest finds them by name).
from test_browser import browser as browser
from test_browser import files as files

from service import Service, module_service

pytestmark = pytest.mark.slow

KEY_A = "browser-key-a-" + uuid.uuid4().hex
KEY_B = "browser-key-b-" + uuid.uuid4().hex
WRONG = "browser-key-x-" + uuid.uuid4().hex
SECRETS = (KEY_A, KEY_B, WRONG)
SIZES = {"meadow.jpg": (400, 300), "tall hills.jpg": (300, 400), "square.jpg": (240, 240)}


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "webkeys",
        IMGSTREAM_API_KEYS=f"{KEY_A},{KEY_B}",
        IMGSTREAM_SHUTDOWN_GRACE="5",  # an event stream left open must not stall the stop
    )


class KeyTab(Tab):
    """A Tab that also keeps every console message, to prove that no key is ever logged."""

    console: list[str]


Opener = Callable[..., KeyTab]


@pytest.fixture
def open_page(browser: Browser, service: Service) -> Iterator[Opener]:
    """Open a path of the service in a fresh browser context (or `context`, to share storage)."""
    contexts: list[BrowserContext] = []

    def opener(path: str = "/", context: BrowserContext | None = None) -> KeyTab:
        if context is None:
            context = browser.new_context(viewport=DESKTOP)
            contexts.append(context)
        tab = KeyTab(context, context.new_page())
        tab.console = []
        tab.page.on("request", lambda request: tab.requests.append(request))
        tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
        tab.page.on("console", lambda message: _console(tab, message))
        tab.page.goto(service.url + path)
        return tab

    yield opener
    for context in contexts:
        context.close()


def _console(tab: KeyTab, message: ConsoleMessage) -> None:
    tab.console.append(message.text)
    # The browser logs every 4xx answer ("Failed to load resource"): 401s are expected here.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        tab.errors.append(message.text)


def key_input(page: Page) -> Any:
    return page.get_by_label("API key", exact=True)


def give_key(page: Page, key: str, *, remember: bool = False) -> None:
    """Wait for the form (focused on its input), type `key` and press "Use key"."""
    field = key_input(page)
    field.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "api-key-input"
    assert page.get_by_role("heading", name="API key needed").is_visible()
    field.fill(key)
    if remember:
        page.get_by_label("Remember on this device").check()
    page.get_by_role("button", name="Use key").click()


def expect_refused(page: Page) -> None:
    error = page.locator("#api-key-error")
    page.wait_for_function(
        "() => document.querySelector('#api-key-error').textContent.includes('did not accept')"
    )
    assert "did not accept this key" in error.inner_text()
    assert key_input(page).get_attribute("aria-invalid") == "true"
    assert key_input(page).is_visible()


def api_requests(tab: KeyTab, service: Service) -> list[Request]:
    return [r for r in tab.requests if r.url.startswith(f"{service.url}/api/")]


def assert_no_key_leaked(tab: KeyTab) -> None:
    """No key in any URL (nor in a request body), nor in anything written to the console."""
    for request in tab.requests:
        for secret in SECRETS:
            assert secret not in request.url, request.url
            assert secret.encode() not in (request.post_data_buffer or b""), request.url
    for text in tab.console:
        assert not any(secret in text for secret in SECRETS), text


def stored_key(page: Page) -> dict[str, str | None]:
    return page.evaluate(
        """() => ({
            tab: sessionStorage.getItem("imgstream.api-key.v1"),
            device: localStorage.getItem("imgstream.api-key.v1"),
        })"""
    )


def test_page_asks_for_a_key_then_a_batch_runs_live_over_fetched_events(
    open_page: Opener,
    service: Service,
    files: dict[str, Path],
    tmp_path: Path,
) -> None:
    tab = open_page("/")
    page = tab.page
    page.wait_for_selector("html[data-ready]")
    assert page.locator("#api-key").is_hidden()  # nothing asked the API yet: no form

    page.set_input_files("#file-input", [files[name] for name in SIZES])
    page.click("#submit")
    give_key(page, WRONG)  # the first upload answered 401 and waits
    expect_refused(page)
    assert stored_key(page) == {"tab": None, "device": None}  # a refused key is not kept
    shoot_panel(page, "keys-refused")
    give_key(page, KEY_A)  # the waiting upload is sent again, and the rest follow
    wait_for_cards(page, 3)

    for name, size in SIZES.items():
        assert card(page, name).get_attribute("data-status") == "done"
        assert natural_size(page, name) == size  # fetched with the key, shown from a blob
    ids = {card(page, name).get_attribute("data-job-id") for name in SIZES}
    requests = api_requests(tab, service)
    streams = [r for r in requests if EVENTS_PATH.search(r.url)]
    assert {EVENTS_PATH.search(r.url).group(1) for r in streams} == ids  # type: ignore[union-attr]
    assert {r.resource_type for r in streams} == {"fetch"}  # read with fetch, not EventSource
    assert [r.url for r in requests if JOB_PATH.search(r.url)] == []  # not a single poll
    authorized = [r for r in requests if r.all_headers().get("authorization")]
    assert {r.all_headers()["authorization"] for r in authorized} <= {
        f"Bearer {WRONG}",
        f"Bearer {KEY_A}",
    }
    assert all(
        r.all_headers().get("authorization") == f"Bearer {KEY_A}"
        for r in requests
        if EVENTS_PATH.search(r.url) or r.url.endswith("/result")
    )
    assert stored_key(page) == {"tab": KEY_A, "device": None}
    assert "in use in this tab" in page.inner_text("#api-key")
    assert page.get_by_role("button", name="Forget key").is_visible()
    for job_id in ids:  # the jobs are the key's: without it the API says 401, with it 200
        assert service.http.get(f"/api/jobs/{job_id}").status_code == 401
        mine = service.http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY_A}"})
        assert mine.json()["status"] == "done"

    with page.expect_download() as download:
        page.click("#download-all")
    archive = tmp_path / "all.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as bundle:
        assert len(bundle.namelist()) == 3 and bundle.testzip() is None
    shoot_panel(page, "keys-results")

    # The same tab after a reload keeps the key: the list comes back without asking.
    page.reload()
    page.wait_for_selector("html[data-ready]")
    wait_for_cards(page, 3)
    assert page.locator("#api-key-input").is_hidden()

    # Forget the key, reload, and give another one: these jobs are not that key's to see.
    page.get_by_role("button", name="Forget key").click()
    assert "Key forgotten" in page.inner_text("#api-key")
    assert stored_key(page) == {"tab": None, "device": None}
    page.reload()
    page.wait_for_selector("html[data-ready]")
    give_key(page, KEY_B, remember=True)  # every restored job answered 401 and waits
    page.wait_for_function(
        "() => document.querySelectorAll('.job-card[data-status=missing]').length === 3"
    )
    assert "Not visible with this key" in card(page, "meadow.jpg").inner_text()
    assert "remembered on this device" in page.inner_text("#api-key")
    assert stored_key(page) == {"tab": None, "device": KEY_B}
    shoot_panel(page, "keys-other-key")

    assert_no_key_leaked(tab)
    assert tab.errors == []


def test_dashboard_asks_for_a_key_then_shows_the_stats(open_page: Opener, service: Service) -> None:
    tab = open_page("/dashboard")
    page = tab.page
    give_key(page, WRONG)
    assert page.inner_text("#connection") == "waiting for an API key"
    expect_refused(page)
    give_key(page, KEY_A, remember=True)
    page.wait_for_function("() => document.querySelector('#connection').textContent === 'live'")
    assert re.fullmatch(r"\d+", page.inner_text("#backlog"))
    assert re.fullmatch(r"\d+", page.inner_text("#workers"))
    page.wait_for_function(  # the next refresh carries the key too, without asking
        "() => /updated/.test(document.querySelector('#updated').textContent)"
    )
    stats = [r for r in api_requests(tab, service) if r.url.endswith("/api/stats")]
    assert stats[-1].all_headers().get("authorization") == f"Bearer {KEY_A}"
    shoot_panel(page, "keys-dashboard")

    # Remembered on this device: another page in the same browser does not ask again.
    other = open_page("/dashboard", context=tab.context)
    other.page.wait_for_function(
        "() => document.querySelector('#connection').textContent === 'live'"
    )
    assert other.page.locator("#api-key-input").is_hidden()
    assert_no_key_leaked(tab)
    assert_no_key_leaked(other)
    assert tab.errors == [] and other.errors == []


def shoot_panel(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


PARSER_CASES = r"""async () => {
    const { EventStreamParser, isEventStream, readEventStream } =
        await import("/static/eventstream.js");
    const collect = () => {
        const seen = { events: [], retries: [] };
        seen.parser = new EventStreamParser({
            onEvent: (event) => seen.events.push(event),
            onRetry: (ms) => seen.retries.push(ms),
        });
        return seen;
    };
    const run = (chunks) => {
        const seen = collect();
        for (const chunk of chunks) seen.parser.feed(chunk);
        return { events: seen.events, retries: seen.retries };
    };
    // UTF-8 cut inside a character, across two network chunks.
    const bytes = new TextEncoder().encode("event: status\ndata: caf\u00e9\n\n");
    const cut = bytes.indexOf(0xc3) + 1;
    const body = new ReadableStream({
        start(controller) {
            controller.enqueue(bytes.slice(0, cut));
            controller.enqueue(bytes.slice(cut));
            controller.close();
        },
    });
    const response = new Response(body, {
        headers: { "Content-Type": "Text/Event-Stream; charset=utf-8" },
    });
    const streamed = collect();
    const typed = isEventStream(response);
    await readEventStream(response, streamed.parser);
    return {
        crlfSplit: run(["event: status\r", "\ndata: {\"a\":", "1}\r\n\r", "\n"]),
        crOnly: run([": keep-alive\r\rdata:x\rdata:  y\rdata\r\r"]),
        fields: run(["retry: 1500\nretry: 1.5\nid: 7\nfoo: bar\ndata: a\n\n", "data: lost"]),
        empty: run(["event: gone\n\n", "data: after\n\n"]),
        streamed: { typed, events: streamed.events },
        notStream: isEventStream(new Response("", { headers: { "Content-Type": "text/plain" } })),
    };
}"""


def test_the_event_stream_reader_follows_the_standard(open_page: Opener) -> None:
    """The fetch-based reader parses what EventSource would: line ends of every kind, also cut
    between chunks; comments; several data lines; retry and id; a half event at the end."""
    page = open_page("/").page
    page.wait_for_selector("html[data-ready]")
    got = page.evaluate(PARSER_CASES)
    status = {"type": "status", "data": '{"a":1}', "lastEventId": ""}
    assert got["crlfSplit"] == {"events": [status], "retries": []}
    message = {"type": "message", "data": "x\n y\n", "lastEventId": ""}
    assert got["crOnly"] == {"events": [message], "retries": []}
    only = {"type": "message", "data": "a", "lastEventId": "7"}
    assert got["fields"] == {"events": [only], "retries": [1500]}  # "lost" never ended
    # An event without data is not dispatched, and its type does not stick to the next one.
    assert got["empty"]["events"] == [{"type": "message", "data": "after", "lastEventId": ""}]
    accented = {
        "type": "status",
        "data": "caf\N{LATIN SMALL LETTER E WITH ACUTE}",
        "lastEventId": "",
    }
    assert got["streamed"] == {"typed": True, "events": [accented]}
    assert got["notStream"] is False
