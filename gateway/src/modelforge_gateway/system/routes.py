"""/api/health, /api/info and the Kubernetes probes."""

from __future__ import annotations

import logging

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelforge_gateway.deps import ClientsDep, HardwareStub, Rpc, SettingsDep
from modelforge_gateway.errors import error_body, request_id_of
from modelforge_gateway.system import convert
from modelforge_gateway.system.models import HealthResponse, InfoResponse
from modelforge_gateway.upstream.hardware import hardware_info

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


@router.get("/api/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get("/api/info", response_model=InfoResponse)
async def info(hardware: HardwareStub, rpc: Rpc) -> InfoResponse:
    """Providers usable on this hardware: unsloth only when hardware-svc reports a CUDA GPU. When
    hardware-svc cannot be asked, only the providers that run everywhere are listed."""
    try:
        found = await hardware_info(hardware, rpc)
    except grpc.aio.AioRpcError as exc:
        log.warning("hardware-svc did not answer for /api/info: %s %s", exc.code().name, exc.details())
        return convert.info(None)
    return convert.info(found)


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request, clients: ClientsDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: every service answers its health check and the training-event feed is subscribed."""
    checks: dict[str, bool] = dict(await clients.serving(settings.readiness_deadline_s))
    checks["nats"] = request.app.state.event_feed.ready
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    body = error_body(503, f"Not ready: {failing}", request_id_of(request)) | {"status": "not_ready", "checks": checks}
    return JSONResponse(body, status_code=503)
