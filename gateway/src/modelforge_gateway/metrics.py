"""Prometheus metrics of the gateway, served at GET /metrics (no API key: a scrape carries none, and
no series holds request data; route labels are templates such as /api/jobs/{job_id}, never raw
paths, so a client cannot grow the label set).

- modelforge_gateway_requests_total{method, route, status}: every HTTP answer, refusals included
- modelforge_gateway_request_duration_seconds{method, route}: time to the response head (a stream
  counts until its first byte, so long SSE streams do not swamp the latency buckets)
- modelforge_gateway_websocket_clients: WebSocket connections being served now
- modelforge_gateway_events_fanned_out_total: training events handed to WebSocket/SSE subscribers

The series live in the process's registry of the shared kit (modelforge_common.metrics), beside
its process and platform collectors.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelforge_common.metrics import counter, gauge, histogram, render_latest

REQUESTS = counter(
    "modelforge_gateway_requests",
    "HTTP requests answered, by route template and status",
    ("method", "route", "status"),
)
LATENCY = histogram(
    "modelforge_gateway_request_duration_seconds",
    "Time from the request to the response head, by route template",
    ("method", "route"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WEBSOCKET_CLIENTS = gauge("modelforge_gateway_websocket_clients", "WebSocket connections being served")
EVENTS_FANNED_OUT = counter(
    "modelforge_gateway_events_fanned_out", "Training events handed to WebSocket and SSE subscribers"
)

MAX_MEMOIZED_SERIES = 1024
# Paths no route matched: one label value, whatever was asked.
UNMATCHED_ROUTE = "unmatched"

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP answer, and the WebSocket connections open (pure ASGI, so
    streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Labelled series by label values: prometheus-client's labels() costs a lock and a few
        # lookups per call, a tenth of a cached answer's whole time. Capped, as a client picks
        # the method it sends.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, str], Any] = {}

    def _latency_of(self, method: str, route: str) -> Any:
        key = (method, route)
        series = self._latency.get(key)
        if series is None:
            series = LATENCY.labels(method, route)
            if len(self._latency) < MAX_MEMOIZED_SERIES:
                self._latency[key] = series
        return series

    def _requests_of(self, method: str, route: str, status: str) -> Any:
        key = (method, route, status)
        series = self._requests.get(key)
        if series is None:
            series = REQUESTS.labels(method, route, status)
            if len(self._requests) < MAX_MEMOIZED_SERIES:
                self._requests[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            WEBSOCKET_CLIENTS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                WEBSOCKET_CLIENTS.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self._latency_of(scope["method"], route_template(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._requests_of(scope["method"], route_template(scope), str(status)).inc()
