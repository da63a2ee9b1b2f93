"""Property-based fuzz of the gateway's whole OpenAPI document (schemathesis): every operation, a
bounded, derandomized number of generated requests each, against the real gateway app served by
uvicorn over the in-process fake services and a private nats-server. No answer may be a 5xx, and
every answer must match the status codes, content types and schemas the document declares."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).parents[2] / "gateway" / "tests"))

from gateway_fakes import FakeServices, settings_for

from modelforge_common.testing import free_port, nats_server
from modelforge_gateway.main import create_app

pytestmark = pytest.mark.timeout(600)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Operations whose success answer never ends (a live stream) are fuzzed on their error paths only.
STREAMING = {"/api/jobs/{job_id}/events/stream"}


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    fakes = FakeServices()
    fakes.start()
    with nats_server() as nats:
        port = free_port()
        app = create_app(settings_for(fakes, nats_url=nats.url, max_upload_bytes=64 * 1024))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        try:
            yield url
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            fakes.stop()


# The document only; requests go over HTTP to the served app (from_asgi would call a bare app).
schema = schemathesis.openapi.from_dict(create_app().openapi())


@schema.parametrize()
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_schema_conformance(case: schemathesis.Case, gateway_url: str) -> None:
    if case.operation.path in STREAMING:
        case.path_parameters = {"job_id": "no_such_job"}
    case.call_and_validate(base_url=gateway_url, checks=CHECKS, timeout=30)
