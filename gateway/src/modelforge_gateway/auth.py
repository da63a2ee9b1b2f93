"""Optional API-key authentication (MODELFORGE_API_KEYS) and the request-body cap.

When keys are configured every HTTP route but /api/health, and /ws/training, needs one:
`Authorization: Bearer <key>`, or `?access_token=<key>` where a browser cannot set headers
(WebSocket, EventSource). A missing or wrong key gets 401 with the usual error body; a WebSocket
handshake is refused with 401 (or closed with 1008 where the server cannot send an HTTP answer).
The name of the key that authenticated is kept in the scope: jobs record it as their owner.

A pure ASGI middleware, like RequestContextMiddleware, so streaming responses pass through untouched.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from modelforge_gateway.errors import REQUEST_ID_SCOPE_KEY, error_body

OWNER_SCOPE_KEY = "modelforge.api_key_name"
OPEN_PATHS = frozenset({"/api/health"})
# The web console's static files carry no data; the page itself sends the key with each API call.
OPEN_PREFIXES = ("/console/",)
ACCESS_TOKEN_PARAM = "access_token"
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


def presented_key(scope: Scope) -> str:
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
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


class BodyLimitMiddleware:
    """Refuses a request whose declared Content-Length is over the limit with 413 before the body is
    read (the multipart parser would otherwise spool it all to disk first)."""

    def __init__(self, app: ASGIApp, limit_bytes: int, paths: frozenset[str]) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit_bytes:
                mib = self.limit_bytes // (1024 * 1024)
                detail = f"Dataset is larger than the limit of {mib} MiB ({self.limit_bytes} bytes)"
                body = json.dumps(error_body(413, detail, str(scope.get(REQUEST_ID_SCOPE_KEY, "")))).encode()
                await send(
                    {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
