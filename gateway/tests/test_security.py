"""Issue 7 scope 4 and issue 14 at the gateway: API keys on every route but /api/health and the
probes (WebSocket included), the query-string key only where a browser cannot send a header,
the upload cap before the body is read, sanitised upload names, CORS origins from the environment,
and secrets kept out of responses and log lines."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeServices, running_client, settings_for
from starlette.testclient import WebSocketDenialResponse

from modelforge_common.logging import RedactingFilter, secrets_from_environment
from modelforge_gateway.auth import ApiKeys
from modelforge_gateway.main import create_app
from modelforge_gateway.settings import GatewaySettings

ALICE_KEY = "alice-secret-key-0123456789"
CI_KEY = "ci-secret-key-9876543210"
KEYS = f"alice:{ALICE_KEY},ci:{CI_KEY}"
HF_TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123"
VALID_ROWS = b"".join(b'{"prompt": "q%d", "completion": "a%d"}\n' % (i, i) for i in range(12))


def test_api_keys_parse_named_and_plain_forms() -> None:
    keys = ApiKeys.parse(f" alice:{ALICE_KEY} , plainkey123 ,")
    assert keys.owner_of(ALICE_KEY) == "alice"
    assert keys.owner_of("plainkey123") == "key-2"
    assert keys.owner_of("nope") is None
    assert not ApiKeys.parse("").enabled
    with pytest.raises(ValueError, match="item 1"):
        ApiKeys.parse(":onlykey")


def refusal_message(path: str, body: dict[str, Any]) -> str:
    """A 401's message: the usual error body, or OpenAI's shape on the /v1 API."""
    if path.startswith("/v1/"):
        assert body["error"]["code"] == "invalid_api_key"
        return str(body["error"]["message"])
    assert body["status_code"] == 401
    return str(body["detail"])


async def test_every_route_but_health_needs_a_key(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, api_keys=KEYS)) as (app, client):
        assert (await client.get("/api/health")).status_code == 200
        operations = [
            (method.upper(), path.replace("{", "").replace("}", ""))
            for path, item in app.openapi()["paths"].items()
            for method in item
            if path != "/api/health"
        ]
        assert len(operations) > 20
        for method, path in [*operations, ("GET", "/openapi.json"), ("GET", "/docs")]:
            response = await client.request(method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert "API key" in refusal_message(path, response.json())
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/api/datasets", headers={"Authorization": "Bearer wrong-key"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Invalid API key"
        ok = await client.get("/api/datasets", headers={"Authorization": f"Bearer {ALICE_KEY}"})
        assert ok.status_code == 200



async def test_a_query_string_key_counts_only_on_websocket_and_event_stream_routes(fakes: FakeServices) -> None:
    """Keys in URLs land in proxy logs and browser history: only where a browser cannot send a
    header (WebSocket, EventSource) does `?access_token=` authenticate; elsewhere it is no key."""
    async with running_client(settings_for(fakes, api_keys=KEYS)) as (app, client):
        operations = [
            (method.upper(), path.replace("{", "").replace("}", ""))
            for path, item in app.openapi()["paths"].items()
            for method in item
            if path not in ("/api/health", "/api/jobs/{job_id}/events/stream")
        ]
        for method, path in [*operations, ("GET", "/openapi.json")]:
            response = await client.request(method, path, params={"access_token": CI_KEY})
            assert response.status_code == 401, (method, path, response.text)
            assert refusal_message(path, response.json()).startswith("Missing API key")
        # The SSE stream takes it (the fake trainer knows no job_stream: 404 after authentication).
        stream = await client.get("/api/jobs/job_nope/events/stream", params={"access_token": CI_KEY})
        assert stream.status_code == 404, stream.text
        assert (await client.get("/api/jobs/job_nope/events/stream")).status_code == 401
        wrong = await client.get("/api/jobs/job_nope/events/stream", params={"access_token": "wrong"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Invalid API key"
        # Not on a POST to a stream-looking path, nor on another method.
        assert (await client.post("/api/jobs/job_nope/cancel", params={"access_token": CI_KEY})).status_code == 401


async def test_probes_and_metrics_need_no_key(fakes: FakeServices) -> None:
    """A kubelet probe or a Prometheus scrape sends no key; the probes must still answer."""
    async with running_client(settings_for(fakes, api_keys=KEYS)) as (_, client):
        live = await client.get("/healthz")
        assert live.status_code == 200 and live.json() == {"status": "alive"}
        ready = await client.get("/readyz")
        # The fakes serve; NATS is absent here, so not ready: but answered, not refused.
        assert ready.status_code == 503 and ready.json()["checks"]["trainer"] is True
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "modelforge_gateway_requests_total" in metrics.text
        # Only those exact paths.
        for path in ("/healthz/x", "/readyzz", "/metrics/x", "/api/healthz"):
            assert (await client.get(path)).status_code == 401, path


async def test_the_console_page_loads_without_a_key_but_its_api_calls_need_one(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, api_keys=KEYS)) as (_, client):
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert (await client.get("/api/models")).status_code == 401
        assert (await client.get("/consolex")).status_code == 401


def test_websocket_handshake_without_a_key_is_refused(fakes: FakeServices) -> None:
    with TestClient(create_app(settings_for(fakes, api_keys=KEYS))) as client:
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/ws/training"):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["status_code"] == 401
        with client.websocket_connect("/ws/training", headers={"Authorization": f"Bearer {ALICE_KEY}"}) as socket:
            assert socket.receive_json()["type"] == "status"
        with client.websocket_connect(f"/ws/training?access_token={CI_KEY}") as socket:
            assert socket.receive_json()["type"] == "status"


async def test_upload_over_the_cap_is_413_before_the_body_reaches_the_registry(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, max_upload_bytes=1024)) as (_, client):
        big = b'{"prompt": "p", "completion": "c"}\n' * 4000  # ~140 KB, far over cap + multipart slack
        response = await client.post("/api/upload_dataset", files={"file": ("big.jsonl", big)})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert fakes.registry.upload_messages == []


async def test_upload_filename_loses_its_directories(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    for raw in ("../../etc/evil.jsonl", "..\\..\\windows\\evil.jsonl", "/abs/path/evil.jsonl"):
        response = await client.post("/api/upload_dataset", files={"file": (raw, VALID_ROWS)})
        assert response.status_code == 200, response.text
        assert response.json()["filename"] == "evil.jsonl"
    refused = await client.post("/api/upload_dataset", files={"file": ("..", VALID_ROWS)})
    assert refused.status_code == 400


async def test_cors_origins_from_a_comma_separated_variable(
    fakes: FakeServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFORGE_CORS_ORIGINS", "http://a.example, http://b.example")
    settings = GatewaySettings(**settings_for(fakes).model_dump(exclude={"cors_origins"}))
    assert settings.allowed_origins() == ["http://a.example", "http://b.example"]
    async with running_client(settings) as (_, client):
        allowed = await client.options(
            "/api/datasets", headers={"origin": "http://b.example", "access-control-request-method": "GET"}
        )
        other = await client.get("/api/health", headers={"origin": "http://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://b.example"
    assert "access-control-allow-origin" not in other.headers


async def test_secrets_never_reach_responses_or_log_lines(
    fakes: FakeServices, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODELFORGE_API_KEYS", KEYS)
    monkeypatch.setenv("MODELFORGE_HF_TOKEN", HF_TOKEN)
    redact = RedactingFilter(secrets_from_environment())
    handler = caplog.handler
    handler.addFilter(redact)
    caplog.set_level(logging.DEBUG)
    try:
        async with running_client(settings_for(fakes, api_keys=KEYS)) as (_, client):
            bodies = []
            for path in ("/api/health", "/api/system_info", "/api/datasets", "/openapi.json", "/api/models"):
                for headers in ({}, {"Authorization": f"Bearer {ALICE_KEY}"}):
                    bodies.append((await client.get(path, headers=headers)).text)
            bodies.append((await client.get(f"/api/datasets?access_token={CI_KEY}&x={HF_TOKEN}")).text)
            bodies.append((await client.get("/api/datasets", headers={"Authorization": f"Bearer {HF_TOKEN}"})).text)
            # Log lines that carry secrets the way a careless caller would.
            logging.getLogger("modelforge_gateway.test").warning("calling with key %s and token %s", CI_KEY, HF_TOKEN)
            logging.getLogger("uvicorn.access").info('"GET /ws/training?access_token=%s HTTP/1.1" 101', ALICE_KEY)
    finally:
        handler.removeFilter(redact)
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    for secret in (ALICE_KEY, CI_KEY, HF_TOKEN):
        assert all(secret not in body for body in bodies)
        assert secret not in logged
    assert "calling with key *** and token ***" in logged
