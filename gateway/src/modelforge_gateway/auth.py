"""Optional API-key authentication (MODELFORGE_API_KEYS) and the request-body cap.

When keys are configured every HTTP route and /ws/training needs one, except /api/health, the
probes (/healthz, /readyz: a kubelet sends no key), /metrics (a Prometheus scrape carries no key and
the counters hold no request data) and the console's static files: `Authorization: Bearer <key>`,
or `?access_token=<key>` only where a browser cannot set headers: WebSocket routes and the GET
Server-Sent Events streams (EventSource). Elsewhere a query-string key counts as no key: keys in
URLs end up in proxy logs and browser history. A missing or wrong key gets 401 with the usual
error body; a WebSocket
handshake is refused with 401 (or closed with 1008 where the server cannot send an HTTP answer).
The name of the key that authenticated is kept in the scope: jobs record it as their owner.

A pure ASGI middleware, like RequestContextMiddleware, so streaming responses pass through untouched.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelforge_gateway.errors import REQUEST_ID_SCOPE_KEY, error_body
from modelforge_gateway.openai_errors import is_openai_path, openai_error_body

OWNER_SCOPE_KEY = "modelforge.api_key_name"
OPEN_PATHS = frozenset({"/api/health", "/healthz", "/readyz", "/metrics"})
# The web console's static files carry no data; the page itself sends the key with each API call.
OPEN_PREFIXES = ("/console/",)
ACCESS_TOKEN_PARAM = "access_token"
# GET routes answering text/event-stream, which a browser's EventSource opens without headers.
_EVENT_STREAM_PATH = re.compile(r"/api/jobs/[^/]+/events/stream")
WS_POLICY_VIOLATION = 1008


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path == "/" or path.startswith(OPEN_PREFIXES)


@dataclass(frozen=True)
class ApiKeys:
    """Key -> name. Written as "name1:key1,name2:key2" or plain "key1,key2" (named key-1, key-2 ...)."""

    by_key: Mapping[str, str]

    @classmethod
    def parse(cls, raw: str) -> ApiKeys:
        by_key: dict[str, str] = {}
        for index, item in enumerate(part.strip() for part in raw.split(",")):
            if not item:
                continue
            name, sep, key = item.partition(":")
            if not sep:
                name, key = f"key-{index + 1}", item
            name, key = name.strip(), key.strip()
            if not name or not key:
                raise ValueError(f"MODELFORGE_API_KEYS item {index + 1} needs the form name:key or key")
            by_key[key] = name
        return cls(by_key)

    @property
    def enabled(self) -> bool:
        return bool(self.by_key)

    def owner_of(self, presented: str) -> str | None:
        """The key's name, comparing every key in constant time (no early exit on a match)."""
        found = None
        for key, name in self.by_key.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = name
        return found


def accepts_query_token(scope: Scope) -> bool:
    """Where `?access_token=` counts: WebSocket handshakes and GET event streams."""
    if scope["type"] == "websocket":
        return True
    return scope.get("method") == "GET" and _EVENT_STREAM_PATH.fullmatch(scope["path"]) is not None


def presented_key(scope: Scope) -> str:
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if not accepts_query_token(scope):
        return ""
    query: bytes = scope.get("query_string", b"")
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == ACCESS_TOKEN_PARAM and value:
            return value
    return ""


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and (is_open_path(scope["path"]) or scope["method"] == "OPTIONS"):
            # OPTIONS: CORS preflights never carry credentials; the CORS middleware answers them.
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        owner = self.keys.owner_of(key) if key else None
        if owner is None:
            detail = "Invalid API key" if key else "Missing API key: send Authorization: Bearer <key>"
            await self._refuse(scope, send, detail)
            return
        scope[OWNER_SCOPE_KEY] = owner
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        if is_openai_path(scope.get("path", "")):
            body = json.dumps(openai_error_body(401, detail, code="invalid_api_key")).encode()
        else:
            body = json.dumps(error_body(401, detail, str(scope.get(REQUEST_ID_SCOPE_KEY, "")))).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": detail})


class BodyTooLarge(Exception):
    """Raised inside the app's receive() once the body streamed past the cap."""


class BodyLimitMiddleware:
    """Caps the request body of the upload paths while it streams.

    A declared Content-Length over the limit is refused with 413 before any of the body is read.
    A body without one (chunked) or longer than declared is counted as it arrives: the first
    message past the limit is never handed to the app (so the multipart parser has spooled at most
    the limit plus one ASGI message, which uvicorn keeps to 64 KiB and under), and the answer is a
    413 whatever the app was about to say (FastAPI turns the failed read into a 400)."""

    def __init__(self, app: ASGIApp, limit_bytes: int, paths: frozenset[str]) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.paths = paths

    def _detail(self) -> str:
        mib = self.limit_bytes // (1024 * 1024)
        return f"Dataset is larger than the limit of {mib} MiB ({self.limit_bytes} bytes)"

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if is_openai_path(scope["path"]):
            body = json.dumps(openai_error_body(413, self._detail(), "file")).encode()
        else:
            body = json.dumps(error_body(413, self._detail(), str(scope.get(REQUEST_ID_SCOPE_KEY, "")))).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limit_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        exceeded = False
        answered = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if exceeded:
                # Whatever the app answers to the failed read, the client gets the 413.
                if not answered:
                    answered = True
                    await self._refuse(scope, send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted_receive, guarded_send)
        if exceeded and not answered:
            answered = True
            await self._refuse(scope, send)
