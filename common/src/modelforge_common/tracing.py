"""OpenTelemetry traces, request ids and deadlines across service-to-service gRPC calls.

What exists:

- `configure_tracing(service)`: call once at process start. It installs an SDK tracer provider only
  when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP, batched; the standard ``OTEL_*``
  variables configure the exporter) or when a test passes `exporter` (e.g. the SDK's
  ``InMemorySpanExporter``). Otherwise tracing stays off: the interceptors create no spans.
- `TracingServerInterceptor`: installed by `grpc_server.build_server`. Per call it continues the
  caller's trace (W3C ``traceparent`` metadata) in a SERVER span named after the method, carrying the
  caller's ``x-request-id`` as the ``modelforge.request_id`` attribute, and remembers the call's
  deadline so outgoing calls made while serving it inherit it.
- `client_interceptors()`: installed by `grpc_client.make_channel`. Every outgoing call gets
  ``x-request-id`` (from `logging.request_id_var`, unless the caller set it), the current trace
  context, a CLIENT span (when tracing is on), and a timeout no later than the deadline of the call
  being served.
- `start_span(name, request_id=...)`: a context manager for a span of one's own (a training
  worker's step): a no-op when tracing is off.
- `TracingASGIMiddleware(app)`: a pure ASGI middleware for an HTTP server (the gateway): one SERVER
  span per request (continuing a `traceparent` header), named after the route template once routing
  found one, carrying the request id (`logging.request_id_var`, else the ``x-request-id`` request or
  response header); the gRPC calls the request makes are its children. A pass-through when tracing
  is off.

A task created while serving a call copies its context: the request id and trace (wanted) and the
call's deadline (`deadline_var`; set it to None in a task that outlives the call, or every call the
task makes later times out at once).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from modelforge_common.grpc_handlers import Continuation, Request, Response, call_status_code, observed_handler
from modelforge_common.logging import request_id_var

if TYPE_CHECKING:
    # Imported for real only when tracing is configured: a process without tracing never loads the SDK.
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)
CallT = TypeVar("CallT", bound=grpc.aio.Call)

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
REQUEST_ID_METADATA = "x-request-id"
REQUEST_ID_ATTRIBUTE = "modelforge.request_id"
TRACER_NAME = "modelforge"

# time.monotonic() by which the call being served must end (None: no deadline).
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("grpc_deadline", default=None)

_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def configure_tracing(
    service: str, exporter: SpanExporter | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """Turns tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set or `exporter` is given; returns whether
    it is on. A second call adds its exporter to the provider installed first."""
    global _enabled
    env = os.environ if env is None else env
    if exporter is None and not env.get(OTLP_ENDPOINT_ENV, "").strip():
        return _enabled
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        trace.set_tracer_provider(provider)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing: exporting spans over OTLP to %s", env[OTLP_ENDPOINT_ENV])
    _enabled = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def start_span(name: str, *, request_id: str = "", kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span | None]:
    """A current span named `name` with the request id attribute; yields None when tracing is off."""
    if not _enabled:
        yield None
        return
    with tracer().start_as_current_span(name, kind=kind) as span:
        rid = request_id or request_id_var.get()
        if rid:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)
        yield span


def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _end_span(span: Span, code: grpc.StatusCode | None) -> None:
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    span.set_attribute("rpc.grpc.status_code", name)
    if code is not None and code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, name))
    span.end()


# --- HTTP (ASGI) side ----------------------------------------------------------------------------

AsgiScope = dict[str, Any]
AsgiReceive = Callable[[], Awaitable[dict[str, Any]]]
AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]


def _header(headers: Iterable[tuple[bytes, bytes]] | None, name: bytes) -> str:
    for key, value in headers or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class TracingASGIMiddleware:
    """One SERVER span per HTTP request or WebSocket, the parent of the gRPC calls it makes."""

    def __init__(self, app: Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        if not _enabled or scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers") or ()
        }
        method = str(scope.get("method", "WEBSOCKET"))
        span = tracer().start_span(
            method,
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )
        request_id = request_id_var.get() or headers.get(REQUEST_ID_METADATA, "")
        status_code = 0

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal request_id, status_code
            if message.get("type") == "http.response.start":
                status_code = int(message.get("status", 0))
                request_id = request_id or _header(message.get("headers"), REQUEST_ID_METADATA.encode())
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            status_code = status_code or 500
            raise
        finally:
            otel_context.detach(token)
            route = scope.get("route")
            template = getattr(route, "path", "")
            if template:
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
            request_id = request_id or request_id_var.get()
            if request_id:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            if status_code:
                span.set_attribute("http.response.status_code", status_code)
                if status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status_code)))
            span.end()


# --- server side ---------------------------------------------------------------------------------


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """Continues the caller's trace in a SERVER span and remembers the call's deadline."""

    async def intercept_service(
        self,
        continuation: Continuation[Request, Response],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        invocation = handler_call_details.invocation_metadata or ()
        metadata = {key: value for key, value in invocation if isinstance(value, str)}

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> Span | None:
            # Each RPC runs in its own task, so what is set here stays with this call.
            remaining = context.time_remaining()
            deadline_var.set(time.monotonic() + remaining if remaining is not None else None)
            return serve_stream_span(full_method, metadata, metadata.get(REQUEST_ID_METADATA, ""))

        def finish(
            span: Span | None, context: grpc.aio.ServicerContext[Any, Any], failed: BaseException | None
        ) -> None:
            if span is None:
                return
            code = call_status_code(context)
            if code is None:
                code = grpc.StatusCode.OK if failed is None else grpc.StatusCode.UNKNOWN
            _end_span(span, code)

        return observed_handler(handler, begin, finish)


# --- client side ---------------------------------------------------------------------------------


def _outgoing(details: grpc.aio.ClientCallDetails) -> tuple[grpc.aio.ClientCallDetails, Span | None]:
    """The call's details with request id, trace context and inherited deadline, and its span."""
    # The stub says str; grpc.aio hands interceptors the method as bytes.
    raw_method: object = details.method
    method = raw_method.decode() if isinstance(raw_method, bytes) else str(raw_method)
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    given_request_id = metadata.get(REQUEST_ID_METADATA)
    request_id = given_request_id or request_id_var.get()
    if request_id and given_request_id is None:
        metadata.add(REQUEST_ID_METADATA, request_id)
    span: Span | None = None
    if _enabled:
        attributes = _rpc_attributes(method)
        span = tracer().start_span(method.lstrip("/"), kind=SpanKind.CLIENT, attributes=attributes)
        if request_id:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, str(request_id))
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            metadata[key] = value
    timeout = details.timeout
    deadline = deadline_var.get()
    if deadline is not None:
        # Never wait longer than the caller of the call being served will.
        remaining = max(deadline - time.monotonic(), 0.001)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return (
        grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready),
        span,
    )


async def _started(starting: Awaitable[CallT], span: Span | None) -> CallT:
    """The call `starting` gives; a span whose call never started still ends."""
    try:
        return await starting
    except BaseException:
        if span is not None:
            _end_span(span, None)
        raise


# Tasks ending client spans, held until done: the event loop keeps only weak references to tasks.
_span_enders: set[asyncio.Task[None]] = set()


def _end_when_done(call: CallT, span: Span | None) -> CallT:
    """Returns `call`; its span ends with the call's status once the call is done."""
    if span is None:
        return call

    async def end() -> None:
        code: grpc.StatusCode | None
        try:
            code = await call.code()
        except Exception:  # noqa: BLE001 - the span still ends
            code = None
        _end_span(span, code)

    def on_done(_call: object) -> None:
        task = asyncio.ensure_future(end())
        _span_enders.add(task)
        task.add_done_callback(_span_enders.discard)

    call.add_done_callback(on_done)
    return call


# What a client interceptor is given to make the call (generic: Request, Response, the call's type).
_Continuation: TypeAlias = "Callable[[grpc.aio.ClientCallDetails, Request], Awaitable[CallT]]"
_StreamContinuation: TypeAlias = (
    "Callable[[grpc.aio.ClientCallDetails, AsyncIterable[Request] | Iterable[Request]], Awaitable[CallT]]"
)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: _Continuation[Request, grpc.aio.UnaryUnaryCall[Request, Response]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Request,
    ) -> grpc.aio.UnaryUnaryCall[Request, Response]:
        details, span = _outgoing(client_call_details)
        return _end_when_done(await _started(continuation(details, request), span), span)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: _Continuation[Request, grpc.aio.UnaryStreamCall[Request, Response]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Request,
    ) -> grpc.aio.UnaryStreamCall[Request, Response]:
        details, span = _outgoing(client_call_details)
        return _end_when_done(await _started(continuation(details, request), span), span)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: _StreamContinuation[Request, grpc.aio.StreamUnaryCall[Request, Response]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Request] | Iterable[Request],
    ) -> grpc.aio.StreamUnaryCall[Request, Response]:
        details, span = _outgoing(client_call_details)
        return _end_when_done(await _started(continuation(details, request_iterator), span), span)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: _StreamContinuation[Request, grpc.aio.StreamStreamCall[Request, Response]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Request] | Iterable[Request],
    ) -> grpc.aio.StreamStreamCall[Request, Response]:
        details, span = _outgoing(client_call_details)
        return _end_when_done(await _started(continuation(details, request_iterator), span), span)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind (grpc.aio files each interceptor under one kind only)."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


# --- streams multiplexed over one call (InferenceService.GenerateStreams) -------------------------
# Each stream stands for the call it replaces: a CLIENT span where the caller starts it and a SERVER
# span, its child, where it is served, with the trace context carried in the stream's start message.


def start_stream_span(full_method: str) -> tuple[dict[str, str], Span | None]:
    """The trace context to send with a stream started now (the current trace: the caller's request),
    and its CLIENT span (None when tracing is off), to end with end_stream_span."""
    if not _enabled:
        return {}, None
    span = tracer().start_span(full_method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(full_method))
    request_id = request_id_var.get()
    if request_id:
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier, span


def serve_stream_span(full_method: str, carrier: Mapping[str, str], request_id: str) -> Span | None:
    """A SERVER span for one call or stream, continuing the trace its metadata or start message
    carried, made current in the calling task (the call's or stream's own); None when tracing is off."""
    if not _enabled:
        return None
    parent = propagate.extract(dict(carrier))
    span = tracer().start_span(
        full_method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(full_method)
    )
    if request_id:
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
    otel_context.attach(trace.set_span_in_context(span, parent))
    return span


def end_stream_span(span: Span | None, code: grpc.StatusCode) -> None:
    """Ends a stream's span (either side) with the status the stream ended with."""
    if span is not None:
        _end_span(span, code)
