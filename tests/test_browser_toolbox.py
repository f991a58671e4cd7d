"""The page's toolbox in a real browser (Debian's Chromium) against the real API and
workers: a control for every step and output option, and a finished card that paints the
result's placeholder while the result itself downloads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from imgstream import imaging
from imgstream.operations import Limits, spec_from_form
from imgstream.redis_server import RedisServer

# test_browser's fixture, shared ("as" marks it as meant: pytest finds it by name).
from test_browser import ARTIFACTS
from test_browser import browser as browser

from images import encode, flat, photo
from service import Service, module_service

pytestmark = pytest.mark.slow

RESULT = re.compile(r"/api/jobs/[0-9a-f]{32}/result$")


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from module_service(
        redis_server.url,
        tmp_path_factory,
        "webtools",
        1,
        IMGSTREAM_SHUTDOWN_GRACE="5",
    )


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(service.url)
    opened.wait_for_selector("html[data-ready]")
    yield opened
    context.close()
    assert errors == []


def step(page: Page, op: str, name: str) -> Any:
    return page.locator(f"#pipeline .step[data-op={op}] [data-field={name}]")


def submitted_job(page: Page, service: Service, path: Path) -> dict[str, Any]:
    with page.expect_response(
        lambda response: response.url.endswith("/api/jobs") and response.request.method == "POST"
    ) as answer:
        page.set_input_files("#file-input", [str(path)])
        page.click("#submit")
    assert answer.value.status == 202, answer.value.text()
    job_id = answer.value.json()["id"]
    return service.wait(job_id)


def test_every_step_and_output_option_has_a_control(
    page: Page, service: Service, tmp_path: Path
) -> None:
    page.click("#add-resize")
    step(page, "resize", "fit").last.select_option("cover")
    assert step(page, "resize", "gravity").last.is_visible()
    assert step(page, "resize", "background").count() == 0
    step(page, "resize", "fit").last.select_option("contain")
    assert step(page, "resize", "background").last.is_visible()
    assert step(page, "resize", "gravity").count() == 0
    while page.locator("#pipeline [data-action=remove]").count():
        page.locator("#pipeline [data-action=remove]").first.click()
    page.click("#add-crop")
    for name, value in (("left", "10"), ("top", "20"), ("width", "200"), ("height", "120")):
        step(page, "crop", name).fill(value)
    for op in ("rotate", "flip", "adjust", "sharpen", "pixelate", "trim"):
        page.click(f"#add-{op}")
    step(page, "flip", "direction").select_option("vertical")
    step(page, "adjust", "saturation").focus()
    page.keyboard.press("Home")  # saturation 0: grey
    page.select_option("#format", "png")
    assert page.locator("#quality").is_disabled()  # PNG is lossless
    page.select_option("#format", "webp")
    page.fill("#quality", "60")
    page.uncheck("#strip")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "desktop-toolbox.png"), full_page=True)
    titles = page.locator("#pipeline .step-title").all_inner_texts()
    assert titles == ["Crop", "Rotate", "Flip", "Adjust colour", "Sharpen", "Pixelate",
                      "Trim borders"]  # fmt: skip

    source = tmp_path / "photo.png"
    source.write_bytes(encode(photo(320, 240), "png"))
    job = submitted_job(page, service, source)
    assert job["status"] == "done", job
    assert job["operations"] == [
        {"op": "crop", "left": 10, "top": 20, "width": 200, "height": 120},
        {"op": "rotate", "angle": 90.0, "background": None},
        {"op": "flip", "direction": "vertical"},
        {"op": "adjust", "brightness": 1.0, "contrast": 1.0, "saturation": 0.0},
        {"op": "sharpen", "sigma": 1.0},
        {"op": "pixelate", "size": 10},
        {"op": "trim", "threshold": 10.0},
    ]
    assert (job["format"], job["quality"], job["strip"]) == ("webp", 60, False)
    fields = {"operations": json.dumps(job["operations"]), "format": "webp"}
    expected = imaging.render(source.read_bytes(), spec_from_form(fields, Limits()), Limits())
    assert (job["result"]["width"], job["result"]["height"]) == (expected.width, expected.height)
    result = page.locator(".job-card img.job-result")
    result.wait_for(state="attached")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=result.element_handle()
    )


def test_a_finished_card_paints_the_placeholder_while_the_result_loads(
    page: Page, service: Service, tmp_path: Path
) -> None:
    """The result's download is held back until the placeholder has been seen."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route(RESULT, hold)
    while page.locator("#pipeline [data-action=remove]").count():
        page.locator("#pipeline [data-action=remove]").first.click()
    page.click("#add-trim")
    page.select_option("#format", "png")
    source = tmp_path / "red.png"
    source.write_bytes(encode(flat(300, 150, [220, 30, 40]), "png"))
    with page.expect_request(RESULT):
        job = submitted_job(page, service, source)
        assert job["result"]["placeholder"]["dominant_color"] == "#dc1e28"
        canvas = page.locator(".job-card canvas.job-placeholder")
        canvas.wait_for()
    page.wait_for_function("() => document.querySelector('.job-card img.job-result') === null")
    width, height, centre = canvas.evaluate(
        """c => [c.width, c.height, Array.from(
                 c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data)]"""
    )
    assert abs(width / height - 2) < 0.1  # the result's aspect ratio
    assert all(abs(a - b) <= 6 for a, b in zip(centre[:3], [220, 30, 40], strict=True)), centre
    assert canvas.evaluate("c => getComputedStyle(c).backgroundColor") == "rgb(220, 30, 40)"
    page.screenshot(path=str(ARTIFACTS / "desktop-placeholder.png"))

    page.evaluate("0")  # the route event came before this answer: the handler has run
    assert len(held) == 1
    held[0].continue_()
    page.locator(".job-card img.job-result").first.wait_for(state="attached")
    assert page.locator(".job-card canvas.job-placeholder").count() == 0
