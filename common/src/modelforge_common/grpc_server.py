"""gRPC server bootstrap shared by every service: health, reflection, error mapping, drain, and the
observability kit (call metrics and a /metrics endpoint, traces with the request id: see
modelforge_common.metrics and modelforge_common.tracing)."""

from __future__ import annotations

import asyncio
import logging
import signal
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelforge_common.errors import ModelForgeError
from modelforge_common.grpc_handlers import Behaviour, Continuation, Request, Response, rewrap_handler
from modelforge_common.logging import request_id_var
from modelforge_common.metrics import MetricsInterceptor, metrics_port_for, start_metrics_server
from modelforge_common.tracing import TracingServerInterceptor, configure_tracing

log = logging.getLogger(__name__)

# (add_XServicer_to_server, servicer, full service name) per service a process serves.
Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]
# (host, port) each built server bound, so serve() can put /metrics beside it.
_bound: weakref.WeakKeyDictionary[grpc.aio.Server, tuple[str, int]] = weakref.WeakKeyDictionary()


def rpc_status(exc: ModelForgeError) -> status_pb2.Status:
    """The google.rpc.Status (code, message, BadRequest field violations) for a domain error."""
    status = status_pb2.Status(code=grpc.StatusCode[exc.code].value[0], message=exc.message)
    if exc.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return status


def status_for(exc: ModelForgeError) -> tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]:
    """gRPC code and trailing metadata (google.rpc.Status with BadRequest details) for a domain error."""
    return grpc.StatusCode[exc.code], (("grpc-status-details-bin", rpc_status(exc).SerializeToString()),)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, ModelForgeError):
        code, trailers = status_for(exc)
        await context.abort(code, exc.message, trailing_metadata=trailers)
    log.error("unhandled error in RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ExceptionToStatusInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain exceptions into gRPC status codes (with field violations), unknown ones into
    INTERNAL without a traceback, and binds the caller's x-request-id for log lines."""

    async def intercept_service(
        self,
        continuation: Continuation[Request, Response],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = str(metadata.get("x-request-id", ""))

        def unary_response(inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                request_id_var.set(request_id)
                try:
                    return await inner(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status
                    await _abort(context, exc)

            return call

        def stream_response(inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                request_id_var.set(request_id)
                try:
                    async for item in inner(request, context):
                        yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status
                    await _abort(context, exc)

            return call

        return rewrap_handler(handler, unary_response, stream_response)


def build_server(
    registrations: Sequence[Registration],
    bind: str,
    *,
    reflection_enabled: bool = True,
    max_message_bytes: int = 64 * 1024 * 1024,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds a server with health, reflection, call metrics, tracing and the error interceptor;
    returns the bound port (pass port 0 in tests)."""
    server = grpc.aio.server(
        # Metrics outermost: it sees the status the error interceptor aborted with.
        interceptors=[MetricsInterceptor(), TracingServerInterceptor(), ExceptionToStatusInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
    if reflection_enabled:
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
    port = server.add_insecure_port(bind)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {bind}")
    _bound[server] = (bind.rsplit(":", 1)[0] or "127.0.0.1", port)
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str]) -> None:
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def serve(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    names: Iterable[str],
    grace_s: float,
    cleanup: Sequence[Callable[[], Awaitable[None]]] = (),
    metrics_port: int | None = None,
) -> None:
    """Starts serving and blocks until SIGTERM/SIGINT, then fails health, drains and cleans up.

    GET /metrics is served beside the gRPC port on `metrics_port` (None: MODELFORGE_METRICS_PORT,
    else the gRPC port + 1000; 0: off), and traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = list(names)
    # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set; the service named after its first servicer.
    configure_tracing(_short_name(names[0]) if names else "modelforge")
    host, grpc_port = _bound.get(server, ("127.0.0.1", 0))
    port = metrics_port if metrics_port is not None else metrics_port_for(grpc_port)
    if port > 0:
        start_metrics_server(port, host.strip("[]") or "127.0.0.1")
    await server.start()
    await mark_serving(health_servicer, names)
    await stop.wait()
    log.info("shutting down: draining for up to %.1fs", grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_s)
    for hook in cleanup:
        try:
            await hook()
        except Exception:
            log.exception("cleanup hook failed")
    log.info("stopped")


def _short_name(full_name: str) -> str:
    """"registry-svc" from "modelforge.v1.RegistryService"."""
    return full_name.rsplit(".", 1)[-1].removesuffix("Service").lower() + "-svc"


class _GeneratedModule(Protocol):
    """A generated *_pb2 module, as far as service_name reads it."""

    DESCRIPTOR: FileDescriptor


def service_name(descriptor_module: _GeneratedModule, service: str) -> str:
    """Full name of a service from a generated *_pb2 module."""
    return str(descriptor_module.DESCRIPTOR.services_by_name[service].full_name)
