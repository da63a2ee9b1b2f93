"""Re-wrapping a gRPC server method handler, for the server interceptors (metrics, tracing, errors).

A grpc.aio interceptor that acts around each call has to rebuild the handler it was given with the
same kind (unary or streaming request and response) and the same (de)serializers; the two shapes of
behaviour differ only in whether the response is awaited or iterated. These helpers do that once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

State = TypeVar("State")
# What a handler's behaviour is called with and returns (a response, or an async iterator of them).
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap_unary_response: Callable[[Behaviour], Behaviour],
    wrap_stream_response: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler:
    """handler with its behaviour wrapped: by wrap_unary_response for RPCs that answer once, by
    wrap_stream_response for those that stream their answer."""
    if handler.unary_unary or handler.stream_unary:
        behaviour = wrap_unary_response(handler.unary_unary or handler.stream_unary)
        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
    else:
        behaviour = wrap_stream_response(handler.unary_stream or handler.stream_stream)
        factory = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
    return factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def observed_handler(
    handler: grpc.RpcMethodHandler,
    begin: Callable[[grpc.aio.ServicerContext], State],
    finish: Callable[[State, grpc.aio.ServicerContext, BaseException | None], None],
) -> grpc.RpcMethodHandler:
    """handler with begin(context) called as each call starts (in the call's own task) and
    finish(what begin returned, context, the exception or None) as it ends, however it ends; the
    exception is raised on unchanged."""

    def unary_response(inner: Behaviour) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
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
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
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
