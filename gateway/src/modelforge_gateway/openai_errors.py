"""Errors in OpenAI's shape, on /v1 only: ``{"error": {"message", "type", "param", "code"}}``.

The app's own handlers (errors.py) keep answering every other path with the documented /api body;
install_openai_error_handlers wraps each of them so a /v1 request gets the same status in OpenAI's
shape instead. The openai SDKs retry 409 and 5xx answers unless told otherwise: a 409 here means
"the job has finished", which no retry changes, so it carries ``x-should-retry: false``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from modelforge_common.grpc_client import violations_of
from modelforge_gateway.errors import (
    ApiError,
    request_id_of,
    rpc_error_response,
    service_addresses,
    validation_items,
)

PREFIX = "/v1"
Handler = Callable[[Request, Exception], Awaitable[Response]]

ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
NO_RETRY = {"x-should-retry": "false"}
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|bytes)$|[\[\]'\- ]")


class OpenAIError(Exception):
    """An answer decided by a /v1 route."""

    def __init__(self, status_code: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code


def not_found(what: str, ident: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, f"No {what} found with id '{ident}'.", param, f"{what.replace(' ', '_')}_not_found")


def is_openai_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_type(status_code: int) -> str:
    return ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")


def openai_error_body(
    status_code: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status_code), "param": param, "code": code}}


def openai_error_response(
    status_code: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    extra = dict(headers or {})
    if status_code == 409 or status_code == 500:
        extra.update(NO_RETRY)
    return JSONResponse(openai_error_body(status_code, message, param, code), status_code=status_code, headers=extra)


def _param(loc: list[Any]) -> str | None:
    """A pydantic/field-violation location without its "body"/"query" head, as OpenAI writes params."""
    head = 1 if loc and loc[0] in ("body", "query", "path", "header") else 0
    # pydantic names the member of a union that failed ("literal['auto']", "str", "list[str]"): not a param.
    parts = [str(p) for p in loc[head:] if not _UNION_MEMBER.search(str(p))]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or None


def _from_items(items: list[dict[str, Any]]) -> tuple[str, str | None]:
    messages: list[str] = []
    for item in items:
        where = _param(list(item.get("loc", [])))
        message = f"{where}: {item.get('msg')}" if where else str(item.get("msg"))
        if message not in messages:
            messages.append(message)
    first = _param(list(items[0].get("loc", []))) if items else None
    return "; ".join(messages) or "Invalid request", first


def _detail_message(detail: Any, status_code: int) -> tuple[str, str | None]:
    if isinstance(detail, list) and detail and all(isinstance(i, dict) for i in detail):
        return _from_items(detail)
    if isinstance(detail, str) and detail:
        return detail, None
    return HTTPStatus(status_code).phrase, None


async def _openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return openai_error_response(exc.status_code, exc.message, exc.param, exc.code)


def _wrap(original: Callable[[Request, Any], Response | Awaitable[Response]] | None, render: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if is_openai_path(request.url.path) or original is None:
            return await render(request, exc)
        answer = original(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handler


async def _render_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    message, param = _detail_message(exc.detail, exc.status_code)
    return openai_error_response(exc.status_code, message, param, headers=exc.headers)


async def _render_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message, param = _detail_message(exc.detail, exc.status_code)
    if exc.status_code == 404 and message == "Not Found":
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return openai_error_response(404, message, code="unknown_url")
    return openai_error_response(exc.status_code, message, param, headers=getattr(exc, "headers", None))


async def _render_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = _from_items(validation_items(exc.errors()))
    return openai_error_response(400, message, param)


async def _render_rpc(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    status_code, body = rpc_error_response(exc, request.url.path, request_id_of(request), service_addresses(request))
    violations = violations_of(exc) if exc.code() is grpc.StatusCode.INVALID_ARGUMENT else []
    param = violations[0].field.replace("/", ".") if violations else None
    if violations:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    else:
        message = str(body.get("error") or body.get("detail") or HTTPStatus(status_code).phrase)
    headers = {"Retry-After": "1"} if status_code in (429, 503) else None
    return openai_error_response(status_code, message, param, headers=headers)


def install_openai_error_handlers(app: FastAPI) -> None:
    """Call after errors.install_error_handlers: /v1 answers in OpenAI's shape, the rest unchanged."""
    handlers = app.exception_handlers
    app.add_exception_handler(OpenAIError, _openai_error)
    for kind, render in (
        (ApiError, _render_api_error),
        (StarletteHTTPException, _render_http),
        (RequestValidationError, _render_validation),
        (grpc.aio.AioRpcError, _render_rpc),
    ):
        app.add_exception_handler(kind, _wrap(handlers.get(kind), render))
