"""Request ids and the last-resort 500.

A pure ASGI middleware (not BaseHTTPMiddleware) so streaming responses and WebSockets pass through
untouched and the request id context variable is visible to the route code.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelforge_common.logging import request_id_var
from modelforge_gateway.errors import REQUEST_ID_SCOPE_KEY, internal_error_body
from modelforge_gateway.openai_errors import NO_RETRY, is_openai_path, openai_error_body

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# What may travel as gRPC metadata and in a log line; anything else is replaced by a fresh id.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(headers: Headers) -> str:
    given = headers.get(REQUEST_ID_HEADER, "")
    # Random hex like uuid4().hex, without building a UUID object per request.
    return given if given and _VALID_REQUEST_ID.match(given) else os.urandom(16).hex()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        token = request_id_var.set(request_id)
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            # A WebSocket has no response head to stamp: its messages skip the wrapper.
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method", "WS"), scope.get("path"))
            if scope["type"] != "http" or response_started:
                raise
            if is_openai_path(scope["path"]):
                message = f"An internal error occurred (request id {request_id})"
                headers = {REQUEST_ID_HEADER: request_id, **NO_RETRY}
                response = JSONResponse(openai_error_body(500, message), status_code=500, headers=headers)
            else:
                response = JSONResponse(
                    internal_error_body(request_id), status_code=500, headers={REQUEST_ID_HEADER: request_id}
                )
            await response(scope, receive, send)
        finally:
            request_id_var.reset(token)


# Methods that never change state: they leave the read caches as they are.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class InvalidateOnWriteMiddleware:
    """Every write through this replica (any POST, PUT, PATCH or DELETE) invalidates the read caches
    (readcache.py) as its answer starts, before the client can send its next read: a client that
    deleted a model or started a job never reads the state from before it here. Whatever the route
    (but the generation POSTs, which change nothing): an invalidation costs one upstream call, a
    missed one a wrong answer."""

    def __init__(self, app: ASGIApp, invalidate: Callable[[], None], read_only: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.invalidate = invalidate
        # Paths whose POST reads only (generation): no invalidation.
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"] in self.read_only:
            await self.app(scope, receive, send)
            return

        async def send_after_invalidating(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.invalidate()
            await send(message)

        try:
            await self.app(scope, receive, send_after_invalidating)
        finally:
            # Also when the route raised before answering (the outer middleware answers 500).
            self.invalidate()


class CachedReadsMiddleware:
    """Answers the hot polling reads straight from the read caches: GET /api/training_status,
    GET /api/models and GET /api/models/ without a query string, while their cached answer needs no
    refresh yet. FastAPI's routing and dependency solving cost about 0.2 ms of CPU per request on
    the gateway's ~100 routes, twice what the whole answer costs from the cache (bench/ANALYSIS.md,
    Load). Everything else, and these paths on a miss or with parameters, go through the routes,
    which fill the caches; every middleware outside this one (request id, tracing, metrics, CORS,
    API key) still sees the request, labelled with its route."""

    def __init__(self, app: ASGIApp, answers: Mapping[str, tuple[Callable[[], bytes | None], object]]) -> None:
        self.app = app
        # path -> (cached body or None, the route the request is labelled with)
        self.answers = dict(answers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and not scope.get("root_path")
            and (answer := self.answers.get(scope["path"])) is not None
        ):
            cached, route = answer
            body = cached()
            if body is not None:
                scope["route"] = route
                headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
