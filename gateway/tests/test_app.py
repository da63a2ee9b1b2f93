"""App assembly: settings from the environment, OpenAPI, CORS, and the uvicorn entry point."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from gateway_fakes import FakeServices, running_client, settings_for

from modelforge_gateway import __main__ as entrypoint
from modelforge_gateway.main import DOCUMENT_ORDER, HOT_ROUTERS, create_app
from modelforge_gateway.settings import GatewaySettings


def test_settings_read_the_modelforge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFORGE_GATEWAY_PORT", "8123")
    monkeypatch.setenv("MODELFORGE_TRAINER_ADDR", "trainer:50051")
    monkeypatch.setenv("MODELFORGE_GENERATE_DEADLINE_S", "60")
    settings = GatewaySettings()
    assert (settings.gateway_port, settings.trainer_addr, settings.generate_deadline_s) == (8123, "trainer:50051", 60)
    monkeypatch.delenv("MODELFORGE_GATEWAY_PORT")
    assert GatewaySettings().gateway_port == 8000


def test_openapi_lists_every_documented_path_with_stable_ids() -> None:
    spec = create_app(GatewaySettings()).openapi()
    paths = set(spec["paths"])
    for path in (
        "/api/health",
        "/api/info",
        "/api/start_training",
        "/api/training_status",
        "/api/stop_training",
        "/api/models",
        "/api/models/",
        "/api/models/{model_id}",
        "/api/models/task/{task}",
        "/api/upload_dataset",
        "/api/datasets",
        "/api/playground/generate",
        "/api/playground/new",
        "/api/playground/model_path",
        "/api/playground/stream",
        "/api/finetune/detect",
        "/api/finetune/status",
        "/api/finetune/estimate_memory",
    ):
        assert path in paths
    operation_ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert "training-start_training" in operation_ids and "finetune-start_training" in operation_ids


async def test_cors_only_when_configured(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes)) as (_, client):
        plain = await client.get("/api/health", headers={"origin": "http://ui.example"})
    assert "access-control-allow-origin" not in plain.headers
    async with running_client(settings_for(fakes, cors_allow_origins=["http://ui.example"])) as (_, client):
        preflight = await client.options(
            "/api/start_training",
            headers={"origin": "http://ui.example", "access-control-request-method": "POST"},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://ui.example"
    assert "x-request-id" in preflight.headers


def test_entrypoint_runs_uvicorn_on_the_configured_address(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_run(app: object, **options: object) -> None:
        seen.update(options, app=app)

    monkeypatch.setenv("MODELFORGE_BIND_HOST", "0.0.0.0")
    monkeypatch.setenv("MODELFORGE_GATEWAY_PORT", "8456")
    monkeypatch.setattr(entrypoint.uvicorn, "run", fake_run)
    monkeypatch.setattr(entrypoint, "configure_logging", lambda *args, **kwargs: None)
    entrypoint.main()
    assert (seen["host"], seen["port"], seen["log_config"]) == ("0.0.0.0", 8456, None)
    assert seen["ws_per_message_deflate"] is False  # small events: compression per socket costs more than it saves
    # Idle connections outlive a proxy's 60 s reuse, so the proxy never sends on one the gateway just closed.
    assert seen["timeout_keep_alive"] == 75
    monkeypatch.setenv("MODELFORGE_WS_PER_MESSAGE_DEFLATE", "true")
    monkeypatch.setenv("MODELFORGE_KEEP_ALIVE_S", "120")
    entrypoint.main()
    assert seen["ws_per_message_deflate"] is True
    assert seen["timeout_keep_alive"] == 120


def _sample_paths(route: APIRoute) -> list[str]:
    return [re.sub(r"\{[^}]+\}", sample, route.path) for sample in ("1", "x", "task", "lineage")]


def _takes(route: APIRoute, other: APIRoute) -> bool:
    """Whether `route` would take a request meant for `other` (a path of other's, a method of other's)."""
    methods_shared = bool((route.methods or set()) & (other.methods or set()))
    return any(route.path_regex.match(path) for path in _sample_paths(other)) and methods_shared


def test_the_hot_routers_take_no_path_of_the_routers_they_precede() -> None:
    # They are matched first for speed (main.HOT_ROUTERS); the routers documented before them must
    # answer exactly what they answered when they were matched first.
    for hot in HOT_ROUTERS:
        jumped = DOCUMENT_ORDER[: DOCUMENT_ORDER.index(hot)]
        for router in jumped:
            for route in (r for r in router.routes if isinstance(r, APIRoute)):
                for hot_route in (r for r in hot.routes if isinstance(r, APIRoute)):
                    assert not _takes(hot_route, route), (hot_route.path, route.path)
                    assert not _takes(route, hot_route), (route.path, hot_route.path)


def test_the_document_keeps_the_routers_order() -> None:
    paths = list(create_app().openapi()["paths"])
    first_path_of: list[int] = []
    for router in DOCUMENT_ORDER:
        documented = [paths.index(r.path) for r in router.routes if isinstance(r, APIRoute) and r.path in paths]
        if documented:
            first_path_of.append(min(documented))
    assert first_path_of == sorted(first_path_of)
