"""Re-wrapping a gRPC server method handler, for the server interceptors (metrics, tracing, errors).

A grpc.aio interceptor that acts around each call has to rebuild the handler it was given with the
same kind (unary or streaming request and response) and the same (de)serializers; the two shapes of
behaviour differ only in whether the response is awaited or iterated. These helpers do that once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast

import grpc

State = TypeVar("State")
Request = TypeVar("Request")
Response = TypeVar("Response")
# What a handler's behaviour is called with and returns (a response, or an async iterator of them):
# Any because one interceptor wraps every service's messages.
Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]
# What a grpc.aio server interceptor is given to reach the next one (generic alias: Continuation[Req, Resp]).
# A string: grpc.RpcMethodHandler is generic only in the stubs.
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]]"
)


def _aio_behaviour(behaviour: object) -> Behaviour:
    # types-grpcio describes RpcMethodHandler's behaviours as sync callables taking grpc.ServicerContext;
    # under grpc.aio the same fields hold coroutine functions (or async generators) taking an aio context.
    if behaviour is None:
        raise ValueError("gRPC method handler without a behaviour")
    return cast(Behaviour, behaviour)


def status_code_of(number: int) -> grpc.StatusCode | None:
    """The StatusCode with this wire number (google.rpc.Status.code); None for a number grpc has no code for."""
    return next((code for code in grpc.StatusCode if code.value[0] == number), None)


def call_status_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    """The status code a call being served has been given so far; None while unset or unknown."""
    try:
        # object, not the stub's StatusCode: the code is None until set, and a raw int in some versions.
        code: object = context.code()
    except Exception:  # noqa: BLE001 - a context without code(): unknown
        return None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return status_code_of(code)
    return None


def rewrap_handler(
    handler: grpc.RpcMethodHandler[Request, Response],
    wrap_unary_response: Callable[[Behaviour], Behaviour],
    wrap_stream_response: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler[Request, Response]:
    """handler with its behaviour wrapped: by wrap_unary_response for RPCs that answer once, by
    wrap_stream_response for those that stream their answer."""
    if handler.unary_unary or handler.stream_unary:
        behaviour = wrap_unary_response(_aio_behaviour(handler.unary_unary or handler.stream_unary))
        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
    else:
        behaviour = wrap_stream_response(_aio_behaviour(handler.unary_stream or handler.stream_stream))
        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
    return factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def observed_handler(
    handler: grpc.RpcMethodHandler[Request, Response],
    begin: Callable[[grpc.aio.ServicerContext[Any, Any]], State],
    finish: Callable[[State, grpc.aio.ServicerContext[Any, Any], BaseException | None], None],
) -> grpc.RpcMethodHandler[Request, Response]:
    """handler with begin(context) called as each call starts (in the call's own task) and
    finish(what begin returned, context, the exception or None) as it ends, however it ends; the
    exception is raised on unchanged."""

    def unary_response(inner: Behaviour) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            state = begin(context)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                finish(state, context, exc)
                raise
            finish(state, context, None)
            return response

        return call

    def stream_response(inner: Behaviour) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            state = begin(context)
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as exc:
                finish(state, context, exc)
                raise
            finish(state, context, None)

        return call

    return rewrap_handler(handler, unary_response, stream_response)
