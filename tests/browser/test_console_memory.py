"""The console's New training page against a stack serving the recorded RTX 3070 (8 GiB): an oversize
job shows "Will not fit", its largest parts, the largest batch that fits and the settings that fit;
Apply fills the form with the first proposal and the estimate that follows fits. Headless Chromium from
the system, as tests/browser/test_console.py (skips without one unless MODELFORGE_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_browser import SCREENSHOTS, console_page
from stack_api import running_stack

from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]) -> Iterator[Stack]:
    env = stack_env_for(tmp_path_factory.mktemp("console-memory"))
    env["MODELFORGE_FAKE_HARDWARE"] = "rtx3070"
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    with console_page(stack.gateway_url, {"width": 1280, "height": 900}) as opened:
        yield opened


def test_new_training_offers_the_settings_that_fit_and_applies_them(
    page: Any, tiny_causal_model: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    model = tmp_path / "llama-1b-shape"
    model.mkdir()
    config = json.loads((tiny_causal_model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **LLAMA_1B}))

    page.goto("/#/train")
    page.wait_for_selector("main[data-page] h1")
    page.get_by_label("Base model").fill(str(model))
    page.get_by_label("Batch size per device").fill("16")
    page.get_by_label("Gradient accumulation steps").fill("1")
    page.get_by_label("Max sequence length").fill("2048")
    page.get_by_role("button", name="Estimate memory").click()

    verdict = page.locator(".verdict")
    expect(verdict).to_contain_text("Will not fit")
    expect(verdict).to_contain_text("Largest parts: activations")
    expect(page.locator(".max-batch")).to_contain_text("Largest batch size per device that fits")
    proposals = page.locator(".proposals li")
    expect(proposals.first).to_contain_text("effective batch 16")
    page.screenshot(path=str(SCREENSHOTS / "11-train-does-not-fit.png"), full_page=True)

    proposals.first.get_by_role("button", name="Apply").click()
    # The estimate runs again through the stack: on a loaded 2-core machine that can take past the 5 s default.
    expect(verdict).to_contain_text("Fits", timeout=30_000)
    batch = int(page.get_by_label("Batch size per device").input_value())
    accumulation = int(page.get_by_label("Gradient accumulation steps").input_value())
    assert 1 <= batch < 16 and batch * accumulation >= 16
    expect(page.locator(".proposals")).to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / "12-train-proposal-applied.png"), full_page=True)
