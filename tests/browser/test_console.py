"""The web console in a real browser (headless Chromium driven by Playwright) against the real stack:
hardware and recommendations, a dataset upload (a refused file's per-row errors, then a good one),
the memory estimate and a tiny training whose live chart gains points until the job completes (with
the WebSocket dropped mid-run), the jobs and models pages, and streamed generation in the
playground, at 1280x800 and at phone width. One screenshot per page goes to test-output/console/.

Chromium comes from the system (Debian's `chromium`, installed by `make install` when it runs as
root); Playwright never downloads a browser here. Without one the test skips, or fails when
MODELFORGE_REQUIRE_BROWSER=1 (as CI sets it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_browser import SCREENSHOTS, launched_chromium

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Generous: the tiny training and the first generation load models on 2 CPU cores.
WAIT_MS = 180_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, base_url=stack.gateway_url)
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    opened.uncaught_errors = []  # type: ignore[attr-defined]
    opened.foreign_requests = []  # type: ignore[attr-defined]
    opened.on("pageerror", lambda error: opened.uncaught_errors.append(str(error)))
    origin = stack.gateway_url.split("://", 1)[1]
    opened.on(
        "request",
        lambda request: (
            None
            if origin in request.url or request.url.startswith("data:")
            else opened.foreign_requests.append(request.url)
        ),
    )
    yield opened
    context.close()


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def go(page: Any, hash_path: str) -> None:
    page.goto(f"/#/{hash_path}")
    page.wait_for_selector("main[data-page] h1")


def test_console_end_to_end(page: Any, stack: Stack, tiny_causal_model: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Hardware and recommendations (the v1 wizard).
    go(page, "hardware")
    expect(page.locator(".profile")).to_have_text(re.compile(r"\w+"))
    expect(page.locator("table.fields").first).to_contain_text("cpu_cores")
    expect(page.get_by_role("heading", name=re.compile("Recommended settings"))).to_be_visible()
    shoot(page, "01-hardware")

    # A refused upload lists its problems, each naming its line; nothing is stored.
    go(page, "datasets")
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n[1, 2]\n', encoding="utf-8")
    page.get_by_label("JSONL dataset").set_input_files(str(bad))
    expect(page.locator(".preview table")).to_contain_text("prompt")
    page.get_by_role("button", name="Upload").click()
    refusal = page.locator(".upload-result [role=alert]")
    expect(refusal).to_contain_text("broken.jsonl was refused")
    expect(refusal.locator("li").first).to_contain_text("line")
    shoot(page, "02-datasets-refused")

    good = write_jsonl(text_generation_rows(24, seed=5), tmp_path / "console-chat.jsonl")
    page.get_by_label("JSONL dataset").set_input_files(str(good))
    expect(page.locator(".preview table tbody tr")).to_have_count(5)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".uploaded-name")).to_have_text("console-chat.jsonl")
    expect(page.locator("section table").last).to_contain_text("console-chat.jsonl")
    assert "broken.jsonl" not in page.locator("section table").last.inner_text()
    shoot(page, "03-datasets")

    # New training: the estimate is on screen before the start.
    go(page, "train/console-chat.jsonl")
    page.get_by_label("Base model").fill(str(tiny_causal_model))
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Batch size per device").fill("2")
    page.get_by_label("Learning rate").fill("0.001")
    page.get_by_label("Max sequence length").fill("64")
    page.get_by_label("Max steps").fill("6")
    page.get_by_role("button", name="Estimate memory").click()
    expect(page.locator(".verdict")).to_contain_text("Fits")
    expect(page.locator(".estimate table")).to_contain_text("total")
    shoot(page, "04-train")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"#/jobs/.+"))
    job_id = page.url.split("#/jobs/", 1)[1]

    # The live job page. Its WebSocket is dropped as soon as it is live (the job's worker is still
    # starting then); the page reconnects with `since`, the chart gains a point per logged step
    # (none lost, none repeated: it matches the gateway's event history) and the status reaches
    # completed.
    loss_chart = page.locator("svg.chart.loss")
    expect(page.locator(".connection")).to_have_text("live")
    points_at_drop = int(loss_chart.get_attribute("data-points") or 0)
    page.evaluate("window.modelforgeConsole.follower.dropConnection()")
    expect(page.locator(".connection")).to_contain_text("reconnected")
    # (polled by expect: the page's Content-Security-Policy rules out wait_for_function's eval)
    expect(loss_chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
    expect(page.locator(".status")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.locator(".connection")).to_have_text("job completed")
    points = int(loss_chart.get_attribute("data-points") or 0)
    assert points > points_at_drop
    assert int(page.evaluate("window.modelforgeConsole.follower.reconnects")) >= 1
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        history = client.get(f"/api/jobs/{job_id}/events")
    if history.status_code == 200:  # a gateway that keeps the history: every logged step is on the chart
        steps = {e["current_step"] for e in history.json()["events"] if e["type"] == "progress" and e.get("loss")}
        assert points == len(steps), (points, sorted(steps))
    expect(page.locator("svg.chart.lr")).not_to_have_attribute("data-points", "0")
    assert page.locator("ol.logs li").count() >= 1
    shoot(page, "05-job")
    model_id = page.locator(".message.success a").first.inner_text()
    assert model_id

    # Jobs list and models.
    go(page, "jobs")
    expect(page.locator("table")).to_contain_text(job_id)
    shoot(page, "06-jobs")
    go(page, "models")
    page.get_by_role("link", name=model_id).click()
    expect(page.locator(".model-metrics")).to_contain_text("final_loss")
    expect(page.locator(".model-training_params")).to_contain_text("learning_rate")
    shoot(page, "07-model")

    # Playground: streamed generation.
    page.get_by_role("link", name="Try in the playground").click()
    page.get_by_label("Max new tokens").fill("8")
    page.get_by_label("Temperature").fill("0")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("output.generated")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(page.locator(".stats")).to_have_text(re.compile(r"^[1-8] tokens in \d+ ms$"))
    shoot(page, "08-playground")
    # The playground keeps a conversation: the next turn sends the earlier ones as messages.
    expect(page.locator("ol.conversation li")).to_have_count(1)
    page.get_by_label("Prompt", exact=True).fill("And in winter?")
    with page.expect_request("**/api/playground/stream") as sent:
        page.get_by_role("button", name="Generate").click()
    turns = sent.value.post_data_json["messages"]
    assert [(t["role"], t["content"]) for t in turns][::2] == [("user", "Where does the red fox live?"),
                                                             ("user", "And in winter?")]
    assert turns[1]["role"] == "assistant"
    expect(page.locator("ol.conversation li")).to_have_count(3, timeout=WAIT_MS)
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("ol.conversation li")).to_have_count(0)

    # An API error is a readable message: a model that does not exist.
    go(page, "models/no-such-model")
    expect(page.locator("[role=alert]")).to_contain_text("404")
    expect(page.locator("[role=alert]")).to_contain_text("not found")

    # Keyboard: the skip link comes first, the sections are reachable and open with Enter.
    go(page, "hardware")
    # The page's hardware data is held back until the skip link has the focus, as on a slow network.
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    page.route("**/api/finetune/hardware_specs", hold)
    page.reload()
    page.wait_for_selector("main[data-page] h1")
    first_tabbable = page.evaluate(
        "() => { const all = document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]');"
        " const el = [...all].find(e => e.tabIndex >= 0 && !e.disabled); return el ? el.className : null; }"
    )
    assert first_tabbable == "skip-link"
    # The page must have the browser's focus for :focus styles to apply (another page of the
    # machine's browsers may have taken it); then the link is shown on screen once it has focus.
    page.bring_to_front()
    page.locator(".skip-link").focus()
    expect(page.locator(".skip-link")).to_be_focused()
    # The data arrives after the user moved the focus: it stays where they put it.
    for _ in range(3000):  # the request is intercepted within 30 s
        if held:
            break
        page.wait_for_timeout(10)
    assert held, "the hardware page never asked for its data"
    held[0].continue_()
    page.unroute("**/api/finetune/hardware_specs")
    expect(page.locator(".profile")).to_have_text(re.compile(r"\w+"))
    expect(page.locator("table.fields").first).to_contain_text("cpu_cores")
    expect(page.locator(".skip-link")).to_be_focused()
    expect(page.locator(".skip-link")).to_be_in_viewport(timeout=WAIT_MS)
    skip_box = page.locator(".skip-link").bounding_box()
    assert skip_box is not None and skip_box["x"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.url.endswith("#/hardware")  # the skip link moved focus, not the route
    page.locator("nav a", has_text="Models").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#/models$"))
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Models")
    expect(page.locator("#main")).to_be_focused()  # the new page, once rendered, has the focus

    # Phone width: no page scrolls sideways.
    page.set_viewport_size(PHONE)
    phone_pages = (
        ("09-phone-job", f"jobs/{job_id}", "svg.chart.loss circle"),
        ("10-phone-train", "train", ".estimate"),
        ("11-phone-models", "models", "main table"),
    )
    for name, hash_path, rendered in phone_pages:
        go(page, hash_path)
        page.wait_for_selector(rendered)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        shoot(page, name)
    page.set_viewport_size(DESKTOP)

    # Model deletion from its page.
    go(page, f"models/{model_id}")
    page.get_by_role("button", name="Delete model", exact=True).click()
    page.get_by_role("button", name=f"Yes, delete {model_id}").click()
    expect(page.locator("[role=alert]")).to_contain_text("deleted")

    assert page.uncaught_errors == [], page.uncaught_errors
    assert page.foreign_requests == [], page.foreign_requests
