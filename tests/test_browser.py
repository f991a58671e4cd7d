"""The web page in a real browser (Debian's Chromium) against the real API and workers.

Chromium is installed by ``make browser`` (part of ``make test``) where root may use apt;
elsewhere these tests skip, saying why, except on CI (``CI`` set), where they must run.
Screenshots of the main states land in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pyvips
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    sync_playwright,
)

from imgstream.redis_server import RedisServer

from images import encode, photo, png_declaring
from service import Service, module_service

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
UPLOAD_LIMIT = 64 * 1024
MAX_SIGMA, MAX_DIMENSION, MAX_STEPS = 37, 12_000, 4
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
JOB_PATH = re.compile(r"/api/jobs/([0-9a-f]{32})$")
EVENTS_PATH = re.compile(r"/api/jobs/([0-9a-f]{32})/events$")
JOB_ID = re.compile(r"[0-9a-f]{32}")


def scene(width: int, height: int, hue: int) -> bytes:
    """A small landscape (sky, sun, hills) as JPEG: real pixels, and pleasant in screenshots."""
    x, y = pyvips.Image.xyz(width, height).bandsplit()
    t = y / height
    image = ((60 + hue) + 80 * t).bandjoin([150 + 70 * t, 240 - 30 * t])
    sun = ((x - width * 0.7) ** 2 + (y - height * 0.32) ** 2) < (min(width, height) * 0.13) ** 2
    image = sun.ifthenelse([255, 212, 92], image)
    ridge = height * 0.64 + height * 0.07 * (x * (540 / width)).sin()  # pyvips: degrees
    image = (y > ridge).ifthenelse([46 + hue // 3, 128 + hue // 5, 72], image)
    far = height * 0.56 + height * 0.05 * (x * (360 / width) + 40).sin()
    image = ((y > far) & (y <= ridge)).ifthenelse([96, 150, 170 - hue // 4], image)
    data: bytes = image.cast("uchar").copy(interpretation="srgb").write_to_buffer(".jpg", Q=88)
    return data


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (`make browser` installs it where root may use apt)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "web",
        IMGSTREAM_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        IMGSTREAM_SHUTDOWN_GRACE="5",  # an event stream left open must not stall the stop
        # Limits the page can only know by asking the server (none is a default):
        IMGSTREAM_MAX_SIGMA=str(MAX_SIGMA),
        IMGSTREAM_MAX_DIMENSION=str(MAX_DIMENSION),
        IMGSTREAM_MAX_STEPS=str(MAX_STEPS),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three landscapes, one image over the upload limit, and a text file named like a photo."""
    folder = tmp_path_factory.mktemp("uploads")
    made = {
        "meadow.jpg": scene(400, 300, 0),
        "tall hills.jpg": scene(300, 400, 60),
        "square.jpg": scene(240, 240, 120),
        "huge.png": encode(photo(800, 800), "png"),
        "notes.jpg": b"shopping list: milk, eggs, flour\n" * 20,
    }
    assert len(made["huge.png"]) > 2 * UPLOAD_LIMIT
    paths = {}
    for name, data in made.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


@dataclass
class Tab:
    """A page in its own browser context, with every request and script error it saw."""

    context: BrowserContext
    page: Page
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


Opener = Callable[..., Tab]


@pytest.fixture
def open_page(browser: Browser, service: Service) -> Iterator[Opener]:
    """Open the page in a fresh browser context; every context is closed when the test ends,
    passed or not, so no event stream outlives it."""
    contexts: list[BrowserContext] = []

    def opener(viewport: dict[str, int], **options: Any) -> Tab:
        context = browser.new_context(viewport=viewport, **options)
        contexts.append(context)
        tab = Tab(context, context.new_page())
        tab.page.on("request", lambda request: tab.requests.append(request))
        tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
        tab.page.on("console", lambda message: _script_error(tab, message))
        tab.page.goto(service.url)
        tab.page.wait_for_selector("html[data-ready]")
        return tab

    yield opener
    for context in contexts:
        context.close()


def _script_error(tab: Tab, message: ConsoleMessage) -> None:
    # The browser logs every 4xx answer ("Failed to load resource"); some are expected here.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        tab.errors.append(message.text)


def card(page: Page, name: str) -> Any:
    return page.locator(".job-card", has=page.locator(".job-name", has_text=name))


def wait_for_cards(page: Page, count: int, timeout: float = 60_000) -> None:
    page.wait_for_function(
        """count => document.querySelectorAll(
            '.job-card[data-status=done], .job-card[data-status=failed],'
            + ' .job-card[data-status=refused], .job-card[data-status=expired]').length >= count""",
        arg=count,
        timeout=timeout,
    )


def natural_size(page: Page, name: str) -> tuple[int, int]:
    image = card(page, name).locator("img.job-result")
    image.wait_for(state="attached")  # in the hidden side-by-side view on phones
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return int(size[0]), int(size[1])


LUMINANCE = """element => {
    const luminance = colour => {
        const [r, g, b] = colour.match(/\\d+/g).map(Number);
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const style = getComputedStyle(element);
    return [luminance(style.backgroundColor), luminance(style.color)];
}"""


def theme(page: Page, name: str) -> str:
    """``dark`` or ``light``: what the page and the card of ``name`` show, by the luminance of
    their backgrounds and text; ``mixed …`` when they do not agree."""
    shown = [page.locator("body").evaluate(LUMINANCE), card(page, name).evaluate(LUMINANCE)]
    if all(back < 60 and text > 180 for back, text in shown):
        return "dark"
    if all(back > 200 and text < 80 for back, text in shown):
        return "light"
    return f"mixed {shown}"


def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def build_pipeline(page: Page) -> None:
    """Resize 120 wide, grayscale, blur 2.5, WebP: built with add, remove, reorder, keys."""
    page.locator("#pipeline .step").first.wait_for()
    for remove in page.locator("#pipeline [data-action=remove]").all()[1:]:
        remove.click()
    page.get_by_label("Width (px)").fill("120")
    page.click("#add-blur")
    sigma = page.get_by_label("Strength (sigma)")
    sigma.focus()
    page.keyboard.press("ArrowRight")  # 2.0 -> 2.5, with the keyboard
    page.click("#add-grayscale")
    page.click("#add-blur")
    page.get_by_label("Remove step 4 (blur)").click()
    page.get_by_label("Move step 3 (grayscale) up").click()
    page.select_option("#format", "webp")
    titles = page.locator("#pipeline .step-title").all_inner_texts()
    assert titles == ["Resize", "Grayscale", "Blur"]


EXPECTED_OPERATIONS = [
    {"op": "resize", "width": 120, "height": None, "fit": "inside", "enlarge": False},
    {"op": "grayscale"},
    {"op": "blur", "sigma": 2.5},
]
EXPECTED_SIZES = {"meadow.jpg": (120, 90), "tall hills.jpg": (120, 160), "square.jpg": (120, 120)}


def test_a_batch_live_then_download_all_then_reload(
    open_page: Opener, service: Service, files: dict[str, Path], tmp_path: Path
) -> None:
    tab = open_page(DESKTOP)
    page, requests = tab.page, tab.requests
    shoot(page, "desktop-empty")
    build_pipeline(page)
    page.set_input_files("#file-input", list(files.values()))
    assert "5 images ready" in page.inner_text("#file-summary")
    page.click("#submit")
    wait_for_cards(page, 5)

    for name, size in EXPECTED_SIZES.items():
        assert card(page, name).get_attribute("data-status") == "done"
        assert natural_size(page, name) == size
        assert (
            f"{size[0]} \N{MULTIPLICATION SIGN} {size[1]} px · WEBP"
            in card(page, name).inner_text()
        )
    huge = card(page, "huge.png")
    assert huge.get_attribute("data-status") == "refused"
    assert "File too large" in huge.inner_text() and "MB" in huge.inner_text()
    assert "at most 64 KB per image" in huge.inner_text()  # the limit, learnt from the server
    notes = card(page, "notes.jpg")
    assert notes.get_attribute("data-status") == "refused"
    assert "Not a supported image" in notes.inner_text()
    assert page.locator("[role=alert]").count() == 2

    # Sent as batches, never as single jobs: the server refuses a batch whole and names the
    # image, the page marks that card and sends the others again.
    posted = [r.url for r in requests if r.method == "POST"]
    assert [url.removeprefix(service.url) for url in posted] == ["/api/batches"] * 3
    # Followed over the event streams: one per job, and not a single status poll.
    ids = {card(page, name).get_attribute("data-job-id") for name in EXPECTED_SIZES}
    streamed = {m.group(1) for r in requests if (m := EVENTS_PATH.search(r.url))}
    polled = [r.url for r in requests if JOB_PATH.search(r.url)]
    assert streamed == ids and len(ids) == 3
    assert polled == []
    for job_id in ids:
        assert service.http.get(f"/api/jobs/{job_id}").json()["operations"] == EXPECTED_OPERATIONS
    assert page.inner_text("#download-all") == "Download all (3)"
    shoot(page, "desktop-results")

    first = card(page, "meadow.jpg")
    first.get_by_role("button", name="Slider").click()
    slider = first.get_by_role("slider")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    assert slider.input_value() == "47"
    first.screenshot(path=str(ARTIFACTS / "desktop-slider.png"))

    with page.expect_download() as download:
        page.click("#download-all")
    archive = tmp_path / "all.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as bundle:
        assert bundle.testzip() is None
        names = sorted(bundle.namelist())
        assert names == sorted(f"{Path(n).stem}-imgstream.webp" for n in EXPECTED_SIZES)
        for name in EXPECTED_SIZES:
            image = pyvips.Image.new_from_buffer(
                bundle.read(f"{Path(name).stem}-imgstream.webp"), ""
            )
            assert (image.width, image.height) == EXPECTED_SIZES[name]

    # The batch's own ZIP, streamed by the server: the three results, named after the files.
    with page.expect_download() as download:
        page.click("#batch-zip")
    streamed = tmp_path / "batch.zip"
    download.value.save_as(streamed)
    with zipfile.ZipFile(streamed) as bundle:
        assert bundle.namelist() == ["meadow.webp", "tall_hills.webp", "square.webp"]
        for entry, name in zip(bundle.namelist(), EXPECTED_SIZES, strict=True):
            image = pyvips.Image.new_from_buffer(bundle.read(entry), "")
            assert (image.width, image.height) == EXPECTED_SIZES[name]

    # After a reload: the three jobs again, refreshed from the API; an unknown one, expired.
    page.evaluate(
        """id => {
            const recent = JSON.parse(localStorage.getItem("imgstream.recent.v1"));
            recent.push({id, name: "old.jpg", size: 1000, submittedAt: Date.now() - 864e5});
            localStorage.setItem("imgstream.recent.v1", JSON.stringify(recent));
        }""",
        uuid.uuid4().hex,
    )
    page.reload()
    page.wait_for_selector("html[data-ready]")
    wait_for_cards(page, 4)
    assert page.locator(".job-card").count() == 4
    for name, size in EXPECTED_SIZES.items():
        assert card(page, name).get_attribute("data-status") == "done"
        assert natural_size(page, name) == size
    old = card(page, "old.jpg")
    assert old.get_attribute("data-status") == "expired"
    assert "no longer keeps this job" in old.inner_text()
    shoot(page, "desktop-reloaded")
    assert tab.errors == []


def test_the_page_learns_the_limits_and_says_what_was_refused(
    open_page: Opener, files: dict[str, Path], tmp_path: Path
) -> None:
    tab = open_page(DESKTOP)
    page = tab.page
    assert page.get_attribute("html", "data-limits") == "server"
    assert page.get_by_label("Width (px)").get_attribute("max") == str(MAX_DIMENSION)
    page.click("#add-blur")
    assert page.get_by_label("Strength (sigma)").get_attribute("max") == str(MAX_SIGMA)
    for _ in range(MAX_STEPS - 2):
        page.click("#add-grayscale")
    assert page.locator("#pipeline .step").count() == MAX_STEPS
    assert page.locator("#add-resize").is_disabled() and page.locator("#add-blur").is_disabled()
    assert page.inner_text("#pipeline-limit") == f"At most {MAX_STEPS} steps."
    assert page.get_attribute(".site-footer a", "href") == "/docs"
    while page.locator("#pipeline .step").count() > 1:
        page.locator("#pipeline [data-action=remove]").last.click()

    bomb = tmp_path / "vast.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    page.set_input_files("#file-input", [bomb, files["huge.png"]])
    page.click("#submit")
    wait_for_cards(page, 2)
    vast = card(page, "vast.png")
    assert vast.get_attribute("data-status") == "refused"
    assert vast.locator(".job-error-title").inner_text() == "Image too large"
    assert "100000x100000" in vast.inner_text() and "the limit is 50000000" in vast.inner_text()
    assert "Settings not accepted" not in vast.inner_text()
    assert "IMGSTREAM_" not in vast.inner_text()  # operator hints mean nothing to the uploader
    huge = card(page, "huge.png")
    assert huge.locator(".job-error-title").inner_text() == "File too large"
    assert "at most 64 KB per image" in huge.inner_text()
    shoot(page, "desktop-refusals")
    assert tab.errors == []


def test_phone_width_dark_and_polling_when_events_fail(
    open_page: Opener, files: dict[str, Path]
) -> None:
    tab = open_page(PHONE, color_scheme="dark", reduced_motion="reduce", is_mobile=True)
    page, requests = tab.page, tab.requests
    page.route(re.compile(r"/events$"), lambda route: route.abort())
    page.set_input_files("#file-input", [files["tall hills.jpg"], files["notes.jpg"]])
    page.click("#submit")
    wait_for_cards(page, 2)
    assert card(page, "tall hills.jpg").get_attribute("data-status") == "done"
    assert card(page, "notes.jpg").get_attribute("data-status") == "refused"
    assert [r for r in requests if EVENTS_PATH.search(r.url)], "the stream was tried first"
    assert [r for r in requests if JOB_PATH.search(r.url)], "then the page fell back to polling"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert theme(page, "tall hills.jpg") == "dark"
    shoot(page, "phone-dark")


def test_phone_width_light(open_page: Opener, files: dict[str, Path]) -> None:
    tab = open_page(PHONE, is_mobile=True)
    page = tab.page
    page.get_by_label("Width (px)").fill("200")
    page.click("#add-grayscale")  # so that the slider shows a difference
    page.set_input_files("#file-input", [files["meadow.jpg"], files["huge.png"]])
    page.click("#submit")
    wait_for_cards(page, 2)
    assert natural_size(page, "meadow.jpg") == (200, 150)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert theme(page, "meadow.jpg") == "light"
    card(page, "meadow.jpg").scroll_into_view_if_needed()
    shoot(page, "phone")
    assert tab.errors == []


def test_api_docs_render_offline(browser: Browser, service: Service) -> None:
    """Swagger UI comes from the package, not a CDN, and runs under the docs page's policy."""
    context = browser.new_context()
    try:
        page = context.new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith(service.url) else outside.append(request.url)
            ),
        )
        page.goto(f"{service.url}/docs")
        page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=20_000)
        assert "/api/jobs" in page.inner_text(".swagger-ui")
        assert outside == []
    finally:
        context.close()


def test_api_docs_try_it_out_queues_the_documented_example(
    browser: Browser, service: Service, files: dict[str, Path]
) -> None:
    """Swagger UI's *Try it out* on the upload, as shipped: choose a file, press Execute."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{service.url}/docs")
        upload = page.locator("#operations-default-create_job_api_jobs_post")
        upload.locator(".opblock-summary").click()
        upload.locator(".try-out__btn").click()
        upload.locator("input[type=file]").set_input_files(files["meadow.jpg"])
        upload.locator(".execute").click()
        status = upload.locator(".live-responses-table tbody .response-col_status")
        status.wait_for(timeout=20_000)
        body = upload.locator(".live-responses-table .response-col_description pre").first
        assert status.inner_text().strip() == "202", body.inner_text()
        job = service.wait(JOB_ID.search(body.inner_text()).group(0))  # type: ignore[union-attr]
        assert job["status"] == "done", job
        assert job["operations"][0]["op"] == "resize" and job["result"]["width"] == 400
        shoot(page, "docs-try-it-out")
    finally:
        context.close()


@pytest.fixture
def paced_service(redis_server: RedisServer, tmp_path: Path) -> Iterator[Service]:
    """A service that takes one upload per 5 s from a client, two at once (a batch of two
    draws both): the page must wait its turn."""
    running = Service.launch(
        redis_server.url, tmp_path / "data", f"paced-{uuid.uuid4().hex[:8]}", concurrency=1,
        IMGSTREAM_RATE_LIMIT_PER_SECOND="0.2", IMGSTREAM_RATE_LIMIT_BURST="2",
        IMGSTREAM_SHUTDOWN_GRACE="5",
    )  # fmt: skip
    yield running
    running.close()


def test_a_batch_waits_out_the_upload_rate_instead_of_failing(
    browser: Browser, paced_service: Service, files: dict[str, Path]
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        answers: list[tuple[str, int]] = []
        page.on("response", lambda response: answers.append((response.url, response.status)))
        page.goto(paced_service.url)
        page.wait_for_selector("html[data-ready]")
        for count, sent in (
            (2, ["meadow.jpg", "square.jpg"]),
            (4, ["tall hills.jpg", "square.jpg"]),
        ):
            page.set_input_files("#file-input", [files[name] for name in sent])
            page.click("#submit")  # the second batch comes before the bucket holds two again
            wait_for_cards(page, count)
        statuses = page.locator(".job-card").evaluate_all("all => all.map(c => c.dataset.status)")
        assert statuses == ["done"] * 4
        uploads = [status for url, status in answers if url.endswith("/api/batches")]
        assert uploads.count(202) == 2 and set(uploads) <= {202, 429}
        reads = [status for url, status in answers if "/api/jobs/" in url]
        assert reads and 429 not in reads
    finally:
        context.close()


@pytest.fixture
def small_batch_service(redis_server: RedisServer, tmp_path: Path) -> Iterator[Service]:
    """A service whose batches carry at most two images, with the result cache on."""
    running = Service.launch(
        redis_server.url, tmp_path / "data", f"small-{uuid.uuid4().hex[:8]}", concurrency=1,
        IMGSTREAM_BATCH_MAX_FILES="2", IMGSTREAM_RESULT_CACHE="true",
    )  # fmt: skip
    yield running
    running.close()


def test_more_files_than_a_batch_holds_go_as_several_batches(
    browser: Browser, small_batch_service: Service, files: dict[str, Path]
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        posted: list[tuple[str, int]] = []
        page.on(
            "response",
            lambda r: posted.append((r.url, r.status)) if r.request.method == "POST" else None,
        )
        page.goto(small_batch_service.url)
        page.wait_for_selector("html[data-ready]")
        sent = ["meadow.jpg", "tall hills.jpg", "square.jpg"]
        page.set_input_files("#file-input", [files[name] for name in sent])
        page.click("#submit")
        wait_for_cards(page, 3)
        for name in sent:
            assert card(page, name).get_attribute("data-status") == "done"
        # Two images, then one: the limit learnt from /api/limits, never a refused batch.
        batches = [status for url, status in posted if url.endswith("/api/batches")]
        assert batches == [202, 202]
        # The server's ZIP covers one batch only, so the page offers "Download all" instead.
        assert page.locator("#batch-zip").is_hidden()
        assert page.inner_text("#download-all") == "Download all (3)"
        first = card(page, "square.jpg")
        first.get_by_text(" px · ").wait_for()  # its result's details, shown once fetched
        assert "from cache" not in first.inner_text()
        # The same image with the same steps again: done at once from the result cache.
        page.set_input_files("#file-input", [files["square.jpg"]])
        page.click("#submit")
        wait_for_cards(page, 4)
        again = card(page, "square.jpg").first  # the newest card comes first
        assert again.get_attribute("data-status") == "done"
        again.get_by_text(" px · ").wait_for()
        assert "from cache" in again.inner_text()
    finally:
        context.close()
