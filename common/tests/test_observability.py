"""The observability kit as a client and an operator see it: call metrics by method and code on a
scrapeable /metrics endpoint, and traces that follow a request id from a gRPC client through a
server into the call that server makes (with the caller's deadline)."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelforge.v1 import trainer_pb2, trainer_pb2_grpc
from modelforge_common import grpc_server, metrics, tracing
from modelforge_common.errors import FailedPrecondition
from modelforge_common.grpc_client import make_channel
from modelforge_common.grpc_server import build_server, mark_serving, service_name
from modelforge_common.logging import request_id_var
from modelforge_common.testing import free_port

TRAINER = "modelforge.v1.TrainerService"


class HoppingTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    """StartTraining "hop" calls GetTrainingStatus on `downstream`; what that call saw is recorded."""

    def __init__(self) -> None:
        self.downstream: grpc.aio.Channel | None = None
        self.seen: list[dict[str, Any]] = []

    async def StartTraining(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        if request.config.task == "busy":
            raise FailedPrecondition("A training job is already running")
        if request.config.task == "hop" and self.downstream is not None:
            await trainer_pb2_grpc.TrainerServiceStub(self.downstream).GetTrainingStatus(
                trainer_pb2.GetTrainingStatusRequest(job_id="j1"), timeout=60
            )
        return trainer_pb2.StartTrainingResponse()

    async def GetTrainingStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append({"request_id": metadata.get("x-request-id"), "remaining": context.time_remaining()})
        return trainer_pb2.GetTrainingStatusResponse()


async def start_server(servicer: HoppingTrainer) -> tuple[grpc.aio.Server, int]:
    name = service_name(trainer_pb2, "TrainerService")
    server, port, health = build_server(
        [(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, name)], "127.0.0.1:0"
    )
    await server.start()
    await mark_serving(health, [name])
    return server, port


def scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode(), str(reply.headers["Content-Type"])


def handled(method: str, code: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "modelforge_grpc_server_handled_total", {"service": TRAINER, "method": method, "code": code}
    )
    return value or 0.0


def latency_count(method: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "modelforge_grpc_server_handling_seconds_count", {"service": TRAINER, "method": method}
    )
    return value or 0.0


async def test_calls_are_counted_by_method_and_code_and_scraped() -> None:
    servicer = HoppingTrainer()
    server, port = await start_server(servicer)
    ok_before, busy_before = handled("StartTraining", "OK"), handled("StartTraining", "FAILED_PRECONDITION")
    observed_before = latency_count("StartTraining")
    try:
        async with make_channel(f"127.0.0.1:{port}") as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            await stub.StartTraining(trainer_pb2.StartTrainingRequest(config={"task": "fine"}), timeout=5)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.StartTraining(trainer_pb2.StartTrainingRequest(config={"task": "busy"}), timeout=5)
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await server.stop(0)
    assert handled("StartTraining", "OK") == ok_before + 1
    assert handled("StartTraining", "FAILED_PRECONDITION") == busy_before + 2
    assert latency_count("StartTraining") == observed_before + 3

    metrics_port = metrics.start_metrics_server(0)
    assert metrics_port > 0
    body, content_type = await asyncio.to_thread(scrape, metrics_port)
    assert content_type.startswith("text/plain")
    expected = (
        'modelforge_grpc_server_handled_total{code="FAILED_PRECONDITION",method="StartTraining",'
        f'service="{TRAINER}"}} {busy_before + 2}'
    )
    assert expected in body


def test_metrics_port_follows_the_grpc_port_unless_configured() -> None:
    assert metrics.metrics_port_for(50052, env={}) == 51052
    assert metrics.metrics_port_for(50052, env={"MODELFORGE_METRICS_PORT": "9100"}) == 9100
    assert metrics.metrics_port_for(50052, env={"MODELFORGE_METRICS_PORT": "0"}) == 0
    assert metrics.metrics_port_for(50052, env={"MODELFORGE_METRICS_PORT": "many"}) == 0
    assert metrics.metrics_port_for(65000, env={}) == 0


def test_a_port_in_use_does_not_stop_the_service() -> None:
    port = metrics.start_metrics_server(0)
    assert metrics.start_metrics_server(port) == -1


def test_callback_gauges_and_get_or_create() -> None:
    rows = [3]
    metrics.gauge_callback("modelforge_test_rows", "rows in a test table", lambda: rows[0])
    assert metrics.REGISTRY.get_sample_value("modelforge_test_rows") == 3
    rows[0] = 5
    assert metrics.REGISTRY.get_sample_value("modelforge_test_rows") == 5

    def broken() -> float:
        raise ConnectionError("database down")

    metrics.gauge_callback("modelforge_test_rows", "rows in a test table", broken)
    value = metrics.REGISTRY.get_sample_value("modelforge_test_rows")
    assert value is not None and value != value  # NaN: the scrape still answers
    assert metrics.counter("modelforge_test_things", "things") is metrics.counter("modelforge_test_things", "things")
    with pytest.raises(ValueError):
        metrics.gauge("modelforge_test_things", "things")


@pytest.fixture
def tracing_on_for_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tracer provider is process-wide; tests after this one run with tracing off again.
    monkeypatch.setattr(tracing, "_enabled", tracing.tracing_enabled())


@pytest.mark.usefixtures("tracing_on_for_this_test")
async def test_trace_follows_the_request_id_from_client_through_server_to_the_next_call() -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing("test", exporter=exporter)
    downstream_servicer, front_servicer = HoppingTrainer(), HoppingTrainer()
    downstream, downstream_port = await start_server(downstream_servicer)
    front, front_port = await start_server(front_servicer)
    front_servicer.downstream = make_channel(f"127.0.0.1:{downstream_port}")
    token = request_id_var.set("req-abc-123")
    try:
        async with make_channel(f"127.0.0.1:{front_port}") as channel:
            await trainer_pb2_grpc.TrainerServiceStub(channel).StartTraining(
                trainer_pb2.StartTrainingRequest(config={"task": "hop"}), timeout=7
            )
    finally:
        request_id_var.reset(token)
        await front_servicer.downstream.close()
        await front.stop(0)
        await downstream.stop(0)

    # The downstream call carried the request id and the front call's deadline (about 7 s, not its own 60 s).
    assert downstream_servicer.seen[0]["request_id"] == "req-abc-123"
    assert 0 < downstream_servicer.seen[0]["remaining"] < 30

    spans = [s for s in exporter.get_finished_spans() if s.attributes.get("modelforge.request_id") == "req-abc-123"]
    by_kind = {(s.kind, s.name): s for s in spans}
    client = by_kind[(SpanKind.CLIENT, f"{TRAINER}/StartTraining")]
    server = by_kind[(SpanKind.SERVER, f"{TRAINER}/StartTraining")]
    hop_client = by_kind[(SpanKind.CLIENT, f"{TRAINER}/GetTrainingStatus")]
    hop_server = by_kind[(SpanKind.SERVER, f"{TRAINER}/GetTrainingStatus")]
    trace_id = client.context.trace_id
    assert {s.context.trace_id for s in (server, hop_client, hop_server)} == {trace_id}
    assert server.parent.span_id == client.context.span_id
    assert hop_client.parent.span_id == server.context.span_id
    assert hop_server.parent.span_id == hop_client.context.span_id
    assert server.attributes["rpc.grpc.status_code"] == "OK"


async def test_serve_puts_metrics_beside_the_grpc_port_until_stopped() -> None:
    servicer = HoppingTrainer()
    name = service_name(trainer_pb2, "TrainerService")
    server, port, health = build_server(
        [(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, name)], "127.0.0.1:0"
    )
    metrics_port = free_port()
    serving = asyncio.create_task(grpc_server.serve(server, health, [name], grace_s=0, metrics_port=metrics_port))
    async with make_channel(f"127.0.0.1:{port}") as channel:
        await trainer_pb2_grpc.TrainerServiceStub(channel).GetTrainingStatus(
            trainer_pb2.GetTrainingStatusRequest(job_id="j"), timeout=10, wait_for_ready=True
        )
    body, _ = await asyncio.to_thread(scrape, metrics_port)
    assert f'method="GetTrainingStatus",service="{TRAINER}"' in body
    os.kill(os.getpid(), signal.SIGTERM)  # serve() drains on SIGTERM, as in a pod
    await asyncio.wait_for(serving, timeout=30)


@pytest.mark.usefixtures("tracing_on_for_this_test")
async def test_an_http_request_span_is_the_parent_of_its_grpc_calls() -> None:
    """REST -> gRPC: the request's SERVER span (named after its route template, with the request id)
    is the parent of the CLIENT span of the call the route makes, and of the server's span."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", exporter=exporter)
    backend, port = await start_server(HoppingTrainer())
    channel = make_channel(f"127.0.0.1:{port}")

    async def status(request: Request) -> JSONResponse:
        token = request_id_var.set(request.headers["x-request-id"])  # as the gateway's middleware does
        try:
            await trainer_pb2_grpc.TrainerServiceStub(channel).GetTrainingStatus(
                trainer_pb2.GetTrainingStatusRequest(job_id=request.path_params["job_id"]), timeout=10
            )
        finally:
            request_id_var.reset(token)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/api/jobs/{job_id}", status)], middleware=[Middleware(tracing.TracingASGIMiddleware)]
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            response = await client.get("/api/jobs/train_7", headers={"x-request-id": "rest-req-42"})
        assert response.status_code == 200
    finally:
        await channel.close()
        await backend.stop(0)

    spans = [s for s in exporter.get_finished_spans() if s.attributes.get("modelforge.request_id") == "rest-req-42"]
    client_span = next(s for s in spans if s.kind == SpanKind.CLIENT)
    server_span = next(s for s in spans if s.kind == SpanKind.SERVER and s.name == f"{TRAINER}/GetTrainingStatus")
    http = next(s for s in spans if s.kind == SpanKind.SERVER and s.name == "GET /api/jobs/{job_id}")
    assert http.attributes["http.response.status_code"] == 200
    assert client_span.parent.span_id == http.context.span_id
    assert server_span.parent.span_id == client_span.context.span_id
    assert len({s.context.trace_id for s in (http, client_span, server_span)}) == 1
