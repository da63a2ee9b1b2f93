"""The server's end of InferenceService.GenerateStreams: many GenerateStream streams over one gRPC call
(the gateway keeps one open; modelforge_gateway.upstream.generation_streams is the other end).

Each started stream is served by a task of its own over `serve_one` (what a GenerateStream call would
run for the same request); its pieces join one outgoing list, and each response message carries
every event queued since the previous one, so the pieces a decoding step makes for its rows leave as one
message. A stream that fails sends its google.rpc.Status (code, message, field violations) as its last
event, as a GenerateStream call would end with it; a cancelled stream sends nothing more. The call
itself ends when the caller has closed its side and every stream is done, or with the transport, which
cancels every stream still running (their batch slots are freed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeAlias

import grpc
from google.rpc import status_pb2

from modelforge.v1 import inference_pb2
from modelforge_common.errors import ModelForgeError
from modelforge_common.grpc_server import rpc_status
from modelforge_common.logging import request_id_var
from modelforge_common.metrics import record_call
from modelforge_common.tracing import end_stream_span, serve_stream_span

log = logging.getLogger(__name__)

# Each stream counts, logs and traces as the call it stands for.
STREAM_METHOD = "/modelforge.v1.InferenceService/GenerateStream"

# Serves one stream: GenerateStream's behaviour for one request. Domain errors (ModelForgeError) it
# raises end the stream with their status, as the server's error interceptor ends a call.
ServeOne: TypeAlias = Callable[
    [inference_pb2.GenerateStreamRequest], AsyncGenerator[inference_pb2.GenerateStreamResponse, None]
]


def error_status(exc: BaseException) -> bytes:
    """The serialized google.rpc.Status a GenerateStream call would have ended with for `exc`."""
    if isinstance(exc, ModelForgeError):
        status = rpc_status(exc)
    else:
        log.error("unhandled error in a stream", exc_info=exc)
        status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="internal error")
    return bytes(status.SerializeToString())


class StreamsSession:
    """One GenerateStreams call: the streams it started, and the events not yet sent."""

    def __init__(self, serve_one: ServeOne) -> None:
        self._serve_one = serve_one
        self._streams: dict[int, asyncio.Task[None]] = {}
        self._events: list[inference_pb2.StreamEvent] = []
        self._wake = asyncio.Event()

    async def responses(
        self, requests: AsyncIterator[inference_pb2.GenerateStreamsRequest]
    ) -> AsyncIterator[inference_pb2.GenerateStreamsResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                if self._events:
                    events, self._events = self._events, []
                    # Events queued while this message is sent go in the next one.
                    yield inference_pb2.GenerateStreamsResponse(events=events)
                elif reader.done() and not self._streams:
                    reader.result()  # a failed read fails the call
                    return
                else:
                    await self._wake.wait()
                    self._wake.clear()
        finally:
            reader.cancel()
            streams = list(self._streams.values())
            for task in streams:
                task.cancel()
            await asyncio.gather(reader, *streams, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[inference_pb2.GenerateStreamsRequest]) -> None:
        try:
            async for message in requests:
                for action in message.actions:
                    self._act(action)
        finally:
            self._wake.set()

    def _act(self, action: inference_pb2.StreamAction) -> None:
        stream_id = action.stream_id
        kind = action.WhichOneof("action")
        if kind == "cancel":
            task = self._streams.get(stream_id)
            if task is not None:
                task.cancel()
        elif kind == "start":
            if stream_id in self._streams:
                status = status_pb2.Status(
                    code=grpc.StatusCode.ALREADY_EXISTS.value[0], message=f"stream {stream_id} is already open"
                )
                self._emit(inference_pb2.StreamEvent(stream_id=stream_id, error_status=status.SerializeToString()))
                return
            task = asyncio.create_task(self._serve(stream_id, action))
            self._streams[stream_id] = task
            task.add_done_callback(lambda _task: self._ended(stream_id))

    def _ended(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._wake.set()

    def _emit(self, event: inference_pb2.StreamEvent) -> None:
        self._events.append(event)
        self._wake.set()

    async def _serve(self, stream_id: int, action: inference_pb2.StreamAction) -> None:
        # A task of its own: what is set here stays with this stream.
        request_id_var.set(action.request_id)
        span = serve_stream_span(STREAM_METHOD, action.trace_context, action.request_id)
        started, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            pieces = self._serve_one(action.start)
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    self._emit(inference_pb2.StreamEvent(stream_id=stream_id, piece=piece))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # noqa: BLE001 - sent as the stream's status
            status = error_status(exc)
            code = grpc.StatusCode[exc.code] if isinstance(exc, ModelForgeError) else grpc.StatusCode.INTERNAL
            self._emit(inference_pb2.StreamEvent(stream_id=stream_id, error_status=status))
        finally:
            record_call(STREAM_METHOD, code, time.perf_counter() - started)
            end_stream_span(span, code)
