"""Prometheus metrics for every process: one registry, gRPC server call metrics, a /metrics endpoint.

What exists:

- `REGISTRY`: the process's `prometheus_client.CollectorRegistry` (plus the process/platform collectors).
- `counter`, `gauge`, `histogram`: get-or-create a metric on `REGISTRY` (a second call with the same
  name returns the first metric, so modules and tests may declare theirs at import time).
- `gauge_callback(name, doc, fn)`: a gauge read from `fn()` at scrape time (e.g. rows in a table).
- `MetricsInterceptor`: a grpc.aio server interceptor; `grpc_server.build_server` installs it, so every
  service counts ``modelforge_grpc_server_handled_total{service,method,code}`` and observes
  ``modelforge_grpc_server_handling_seconds{service,method}``.
- `start_metrics_server(port, host)`: serves ``GET /metrics`` in a daemon thread; `grpc_server.serve`
  starts it on `metrics_port_for(...)`: ``MODELFORGE_METRICS_PORT`` when set (0 turns it off), else the
  service's gRPC port + 1000 (trainer 51051, registry 51052, hardware 51053, inference 51054).
- `render_latest()`: (body, content type) of the exposition, for an HTTP framework's own route (the
  gateway serves /metrics on its HTTP port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from modelforge_common.grpc_handlers import Continuation, Request, Response, call_status_code, observed_handler

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "MODELFORGE_METRICS_PORT"
# A service's /metrics port when not configured: its gRPC port plus this (50052 -> 51052).
METRICS_PORT_OFFSET = 1000
# Latency buckets (seconds) from a cache hit to a slow merge or a model load.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_metrics: dict[str, MetricWrapperBase] = {}
_metrics_lock = threading.Lock()
MetricT = TypeVar("MetricT", bound=MetricWrapperBase)


def _get_or_create(kind: type[MetricT], name: str, doc: str, labels: Sequence[str], **kwargs: Any) -> MetricT:
    with _metrics_lock:
        existing = _metrics.get(name)
        if existing is not None:
            if not isinstance(existing, kind):
                raise ValueError(f"metric {name} already exists as a {type(existing).__name__}")
            return existing
        metric = kind(name, doc, labelnames=tuple(labels), registry=REGISTRY, **kwargs)
        _metrics[name] = metric
        return metric


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A counter on REGISTRY (named without the _total suffix; the exposition adds it)."""
    return _get_or_create(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, name, doc, labels)


def histogram(name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
    return _get_or_create(Histogram, name, doc, labels, buckets=tuple(buckets))


def gauge_callback(name: str, doc: str, read: Callable[[], float]) -> Gauge:
    """A gauge whose value is `read()` at each scrape; a failing read shows NaN instead of breaking
    the scrape. Calling it again with the same name replaces the function (the newest store wins)."""

    def safe_read() -> float:
        try:
            return float(read())
        except Exception:  # a scrape must not fail because one source is down
            log.warning("metric %s could not be read", name, exc_info=True)
            return float("nan")

    metric = gauge(name, doc)
    metric.set_function(safe_read)
    return metric


GRPC_HANDLED = counter(
    "modelforge_grpc_server_handled",
    "gRPC calls completed by this server, by service, method and status code",
    ("service", "method", "code"),
)
GRPC_LATENCY = histogram(
    "modelforge_grpc_server_handling_seconds",
    "Time this server took to complete a gRPC call (to the last message for streams)",
    ("service", "method"),
)


def split_method(full_method: str) -> tuple[str, str]:
    """("modelforge.v1.RegistryService", "ListModels") from "/modelforge.v1.RegistryService/ListModels"."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def record_call(full_method: str, code: grpc.StatusCode, seconds: float) -> None:
    """Counts one call by its final code and observes its duration: every RPC (MetricsInterceptor), and
    each stream multiplexed over a GenerateStreams call, which stands for a GenerateStream call."""
    service, method = split_method(full_method)
    GRPC_HANDLED.labels(service, method, code.name).inc()
    GRPC_LATENCY.labels(service, method).observe(seconds)


def _code(context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode) -> grpc.StatusCode:
    return call_status_code(context) or default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by service, method and final status code and observes its duration.

    Install it first (outermost) so it sees the code the error interceptor aborted with."""

    async def intercept_service(
        self,
        continuation: Continuation[Request, Response],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method

        def record(started: float, context: grpc.aio.ServicerContext[Any, Any], failed: BaseException | None) -> None:
            if failed is None:
                code = _code(context, grpc.StatusCode.OK)
            elif isinstance(failed, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
            else:
                code = _code(context, grpc.StatusCode.UNKNOWN)
            record_call(full_method, code, time.perf_counter() - started)

        return observed_handler(handler, lambda _context: time.perf_counter(), record)


def metrics_port_for(grpc_port: int, env: Mapping[str, str] | None = None) -> int:
    """The /metrics port of a service listening for gRPC on `grpc_port`: MODELFORGE_METRICS_PORT
    when set (0 = off), else grpc_port + 1000 (0, off, when that is not a valid port)."""
    env = os.environ if env is None else env
    configured = env.get(METRICS_PORT_ENV, "").strip()
    if configured:
        try:
            port = int(configured)
        except ValueError:
            log.warning("%s=%r is not a port number: metrics endpoint off", METRICS_PORT_ENV, configured)
            return 0
        return port if 0 <= port <= 65535 else 0
    derived = grpc_port + METRICS_PORT_OFFSET
    return derived if grpc_port > 0 and derived <= 65535 else 0


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serves GET /metrics (REGISTRY) on host:port in a daemon thread; returns the bound port (pass 0
    for a free one). A port already in use is logged and returns -1: metrics never stop a service."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.warning("metrics endpoint not started on %s:%d: %s", host, port, exc)
        return -1
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def render_latest() -> tuple[bytes, str]:
    """The current exposition of REGISTRY and its content type (for a framework's own /metrics route)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
