"""The console's static serving, without a browser: the page and its assets with the right types
and a same-origin Content-Security-Policy, no way out of the static folder, every JavaScript module
import resolving to a shipped file, and nothing referenced from the internet."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelforge_gateway import console
from modelforge_gateway.errors import install_error_handlers

IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+"([^"]+)";""", re.MULTILINE)
EXTERNAL_URL = re.compile(r"""["'(]\s*(?:https?:)?//[^"')\s]+""")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(console.router)
    return TestClient(app)


def test_index_and_assets_are_served_with_types_and_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/console/app.js">' in page.text
    script = client.get("/console/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/console/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(
    "path", ["/console/../__init__.py", "/console/%2e%2e/__init__.py", "/console/missing.js", "/console/pages"]
)
def test_nothing_outside_the_static_files_is_served(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["status_code"] == 404


def test_every_module_import_resolves_and_nothing_is_external() -> None:
    scripts = sorted(console.STATIC_DIR.rglob("*.js"))
    assert len(scripts) >= 10
    imports = {script: IMPORT.findall(script.read_text(encoding="utf-8")) for script in scripts}
    assert sum(len(targets) for targets in imports.values()) >= 20
    for script, targets in imports.items():
        for target in targets:
            assert target.startswith("."), f"{script.name} imports {target}: only relative modules are shipped"
            assert (script.parent / target).resolve().is_file(), f"{script.name} imports missing {target}"
    for asset in [*scripts, *console.STATIC_DIR.rglob("*.html"), *console.STATIC_DIR.rglob("*.css")]:
        found = EXTERNAL_URL.findall(asset.read_text(encoding="utf-8"))
        assert not [url for url in found if "www.w3.org/2000/svg" not in url], f"{asset.name} references {found}"
