"""The one place where failures become HTTP answers.

Every error body carries the union of both public documents: ``{"detail": ..., "error": ...,
"status_code": N}`` plus the ``request_id``. ``detail`` is a string, or for bad input the list form
of responses.md (``[{"loc": ["body", "task"], "msg": "...", "type": "value_error"}]``), whether the
gateway's own validation or a service's INVALID_ARGUMENT field violations found the problem.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import grpc
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.status import WS_1008_POLICY_VIOLATION

from modelforge_common.errors import FieldViolation
from modelforge_common.grpc_client import violations_of

log = logging.getLogger(__name__)

REQUEST_ID_SCOPE_KEY = "modelforge.request_id"

# DESIGN section 4. RESOURCE_EXHAUSTED is 429 except on uploads (413, see http_status_for).
GRPC_TO_HTTP: Mapping[grpc.StatusCode, int] = MappingProxyType(
    {
        grpc.StatusCode.OK: 500,  # an error carrying OK is a bug somewhere, not a success
        grpc.StatusCode.CANCELLED: 500,
        grpc.StatusCode.UNKNOWN: 500,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.ABORTED: 409,
        grpc.StatusCode.OUT_OF_RANGE: 500,
        grpc.StatusCode.UNIMPLEMENTED: 500,
        grpc.StatusCode.INTERNAL: 500,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DATA_LOSS: 500,
        grpc.StatusCode.UNAUTHENTICATED: 401,
    }
)

# Paths whose RESOURCE_EXHAUSTED means "the request body is too large".
UPLOAD_PATHS = frozenset({"/api/upload_dataset", "/v1/files"})

_VALUE_ERROR_PREFIX = "Value error, "


def http_status_for(code: grpc.StatusCode, *, upload: bool = False) -> int:
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and upload:
        return 413
    return GRPC_TO_HTTP.get(code, 500)


class ApiError(Exception):
    """An HTTP answer decided by a route (a spec message that differs from the service's)."""

    def __init__(
        self, status_code: int, detail: str | list[dict[str, Any]], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = dict(headers or {})


def invalid(loc: Sequence[str | int], msg: str) -> ApiError:
    """A 400 in the list form, for checks that need more than a request schema."""
    return ApiError(400, [{"loc": list(loc), "msg": msg, "type": "value_error"}])


@contextmanager
def rpc_messages(messages: Mapping[grpc.StatusCode, str | tuple[int, str]]) -> Iterator[None]:
    """Answers the documented message for some codes (for example "Model <id> not found" whatever
    wording the registry used), keeping the HTTP status the code maps to unless one is given."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        answer = messages.get(exc.code())
        if answer is None:
            raise
        status_code, message = answer if isinstance(answer, tuple) else (http_status_for(exc.code()), answer)
        raise ApiError(status_code, message) from exc


def request_id_of(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_SCOPE_KEY, ""))


def error_body(status_code: int, detail: Any, request_id: str, error: str | None = None) -> dict[str, Any]:
    return {
        "detail": detail,
        "error": error or _summary(status_code, detail),
        "status_code": status_code,
        "request_id": request_id,
    }


def internal_error_body(request_id: str, cause: str = "") -> dict[str, Any]:
    what = f": {cause}" if cause else ""
    return error_body(500, f"An internal error occurred{what} (request id {request_id})", request_id)


def _summary(status_code: int, detail: Any) -> str:
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            where = ".".join(str(p) for p in item.get("loc", [])[1:])
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts)
    if isinstance(detail, str) and detail:
        return detail
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def _loc_part(part: str) -> str | int:
    return int(part) if part.isdigit() else part


def violation_items(violations: Sequence[FieldViolation]) -> list[dict[str, Any]]:
    """Field violations in the list form: loc = ["body", *field.split("/")], digits as indices."""
    return [
        {
            "loc": ["body", *(_loc_part(p) for p in v.field.split("/") if p)],
            "msg": v.description,
            "type": "value_error",
        }
        for v in violations
    ]


def validation_items(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """pydantic/FastAPI errors reduced to loc, msg and type (no input echo, no ctx objects)."""
    items = []
    for err in errors:
        loc = list(err.get("loc", ()))
        msg = str(err.get("msg", "Invalid value"))
        kind = str(err.get("type", "value_error"))
        if kind == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            position = loc[1] if len(loc) > 1 else None
            msg = f"Request body is not valid JSON: {reason}" + (f" at position {position}" if position else "")
            loc = ["body"]
        elif kind == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}: this request body has no such field" if loc else msg
        elif msg.startswith(_VALUE_ERROR_PREFIX):
            msg = msg[len(_VALUE_ERROR_PREFIX) :]
        items.append({"loc": loc, "msg": msg, "type": kind})
    return items


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = error_body(exc.status_code, exc.detail, request_id_of(request))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route that
    matched the path, but GET and POST of one path are often two routes."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "GET"}  # any method: only the path part of a match counts
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] is not Match.NONE:
            methods.update(route_methods)
    return sorted(methods)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = error_body(exc.status_code, exc.detail, request_id_of(request))
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = error_body(400, validation_items(exc.errors()), request_id_of(request))
    return JSONResponse(body, status_code=400)


_CONNECT_FAILURE = "failed to connect to all addresses"
# host:port forms gRPC and the services write: ipv4:1.2.3.4:50051, [::1]:50051, name.svc:50051.
_ADDRESS = re.compile(
    r"\b(?:ipv4|ipv6|dns|unix):\S+"  # gRPC's resolver forms
    r"|\b\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}\b"  # 10.0.0.3:50052
    r"|\[[0-9A-Fa-f:.]+\]:\d{1,5}\b"  # [::1]:50052
    r"|\blocalhost:\d{1,5}\b"
    r"|\b[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+:\d{2,5}\b"  # registry.modelforge.svc:50052
)
_TRACEBACK = "Traceback (most recent call last)"


def public_details(details: str, services: Mapping[str, str]) -> str:
    """A service's error message as a client may see it: an address becomes the service's name
    (or "a service"), and anything from a traceback on is cut."""
    cut = details.find(_TRACEBACK)
    if cut >= 0:
        details = details[:cut].rstrip() or "The service failed"
    for address, name in services.items():
        details = details.replace(address, f"the {name} service")
    return _ADDRESS.sub("a service", details)


def _unreachable(exc: grpc.aio.AioRpcError, services: Mapping[str, str]) -> str:
    """A public message for a channel that cannot connect, naming the service, not its address."""
    where = f"{exc.details()} {exc.debug_error_string()}"
    name = next((name for addr, name in services.items() if addr in where), None)
    return f"The {name} service is unreachable; try again shortly" if name else "A service is unreachable"


def rpc_error_response(
    exc: grpc.aio.AioRpcError, path: str, request_id: str, services: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Status and body for a failed RPC. `services` maps address -> service name, to say which
    service is unreachable without sending internal addresses to clients."""
    code = exc.code()
    status_code = http_status_for(code, upload=path in UPLOAD_PATHS)
    raw_details = exc.details() or ""
    if status_code == 500:
        # The service's words may hold a traceback, a file path or an internal address: they go to
        # the log only; the client gets the request id to quote.
        log.error("rpc failed: %s %s", code.name, raw_details)
        return status_code, internal_error_body(request_id)
    details = public_details(raw_details, services or {})
    if status_code >= 500:
        log.warning("rpc failed: %s %s", code.name, raw_details)
    if code is grpc.StatusCode.UNAVAILABLE and details.startswith(_CONNECT_FAILURE):
        message = _unreachable(exc, services or {})
        return status_code, error_body(status_code, message, request_id)
    violations = violations_of(exc) if code is grpc.StatusCode.INVALID_ARGUMENT else []
    detail: Any = violation_items(violations) if violations else (details or HTTPStatus(status_code).phrase)
    return status_code, error_body(status_code, detail, request_id, error=details or None)


def service_addresses(request: Request) -> dict[str, str]:
    settings = request.app.state.settings
    return {
        settings.trainer_addr: "trainer",
        settings.registry_addr: "registry",
        settings.hardware_addr: "hardware",
        settings.inference_addr: "inference",
    }


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    status_code, body = rpc_error_response(exc, request.url.path, request_id_of(request), service_addresses(request))
    headers = {}
    if status_code in (429, 503):
        headers["Retry-After"] = "1"
    if status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status_code, headers=headers)


# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
WS_CLOSE_REASON_BYTES = 123


def ws_close_reason(items: Sequence[Mapping[str, Any]]) -> str:
    """A WebSocket close reason naming the bad parameters, short enough for a close frame, without
    echoing the values (FastAPI's default sends the whole error list, input included)."""
    text = _summary(400, items)
    encoded = text.encode()
    if len(encoded) <= WS_CLOSE_REASON_BYTES:
        return text
    return encoded[: WS_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


async def _websocket_validation_error(websocket: WebSocket, exc: Exception) -> None:
    assert isinstance(exc, WebSocketRequestValidationError)
    await websocket.close(code=WS_1008_POLICY_VIOLATION, reason=ws_close_reason(validation_items(exc.errors())))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WebSocketRequestValidationError, _websocket_validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
