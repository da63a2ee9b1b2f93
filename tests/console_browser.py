"""What the browser tests (tests/browser) share: the system's Chromium driven by Playwright (which never
downloads a browser here), skipped without one unless MODELFORGE_REQUIRE_BROWSER=1, and a console page
on a stack's gateway that fails the test if the page threw. Screenshots go to test-output/console/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("MODELFORGE_TEST_OUTPUT", REPO_ROOT / "test-output")) / "console"
BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("MODELFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required (MODELFORGE_REQUIRE_BROWSER=1) but {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    configured = os.environ.get("MODELFORGE_CHROMIUM")
    if configured:
        return configured
    for name in BROWSER_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    unavailable(
        "no Chromium found: install Debian's `chromium` (make install does as root) or set MODELFORGE_CHROMIUM"
    )


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright Browser), closed on the way out."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the dev dependency group in pyproject.toml pins it)")
    executable = chromium_path()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def console_page(base_url: str, viewport: dict[str, int]) -> Iterator[Any]:
    """A page of a fresh Chromium on the console at base_url; an error the page threw fails the test."""
    with launched_chromium() as browser:
        context = browser.new_context(viewport=viewport, base_url=base_url)
        opened = context.new_page()
        opened.set_default_timeout(30_000)
        errors: list[str] = []
        opened.on("pageerror", lambda error: errors.append(str(error)))
        yield opened
        assert errors == []
