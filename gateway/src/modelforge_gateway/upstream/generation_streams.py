"""The gateway's end of InferenceService.GenerateStreams: every GenerateStream a route makes travels as a
message on one open call instead of a call of its own.

Why: on a small machine, a gRPC call's set-up on both sides costs more CPU than a message, and
grpc.aio starts each call from a task of its own, behind every request handler already queued; with
eight users arriving together that per-call work, done one request after another, set their first
tokens apart. On the open call a stream's start is written from the route's own task, starts queued
behind a write in flight go out together, and inference-svc sends the pieces of one decoding step in one
message.

`MultiplexedGenerateStream` takes the stub method's place (`inference.GenerateStream`), with its type:
it returns a call whose read() yields the same GenerateStreamResponse pieces and then EOF, and raises
the same grpc.aio.AioRpcError (code, details, field violations in grpc-status-details-bin) a
GenerateStream call would; cancel() frees the stream's batch slot. A deadline (the call's timeout)
ends the stream with DEADLINE_EXCEEDED. When the open call fails (inference-svc restarted, or
unreachable), every stream on it fails with the call's status and the next stream opens a new call."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.rpc import status_pb2
from opentelemetry.trace import Span

from modelforge.v1 import inference_pb2
from modelforge_common.grpc_handlers import status_code_of
from modelforge_common.logging import request_id_var
from modelforge_common.tracing import end_stream_span, start_stream_span

StreamRequest: TypeAlias = inference_pb2.GenerateStreamRequest
StreamPiece: TypeAlias = inference_pb2.GenerateStreamResponse
CallMetadata: TypeAlias = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]
if TYPE_CHECKING:
    OpenCall: TypeAlias = grpc.aio.StreamStreamCall[
        inference_pb2.GenerateStreamsRequest, inference_pb2.GenerateStreamsResponse
    ]
    OpenMethod: TypeAlias = grpc.aio.StreamStreamMultiCallable[
        inference_pb2.GenerateStreamsRequest, inference_pb2.GenerateStreamsResponse
    ]
else:
    OpenCall = OpenMethod = Any

STREAM_METHOD = "/modelforge.v1.InferenceService/GenerateStream"
# The status a gRPC server answers a method it does not serve with: an inference-svc older than
# GenerateStreams, whose streams then go on as GenerateStream calls (MultiplexedStream.fail).
METHOD_NOT_SERVED = grpc.StatusCode.UNIMPLEMENTED
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def stream_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    """The error a GenerateStream call ending with `status` raises."""
    code = status_code_of(status.code) or grpc.StatusCode.UNKNOWN
    trailing = grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString())) if status.details else None
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), str(status.message))


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# Makes the GenerateStream call a stream becomes when inference-svc predates GenerateStreams.
PerCallFallback: TypeAlias = Callable[[], "grpc.aio.UnaryStreamCall[StreamRequest, StreamPiece]"]


class MultiplexedStream(grpc.aio.UnaryStreamCall[StreamRequest, StreamPiece]):
    """One stream on the open call, read as a GenerateStream call is. If inference-svc refuses the open
    call as a method it does not have (one from before GenerateStreams) before anything arrived, the
    stream goes on as a GenerateStream call of its own, which then answers every method."""

    def __init__(
        self,
        link: _OpenCallLink,
        stream_id: int,
        deadline: float | None,
        span: Span | None,
        fallback: PerCallFallback | None = None,
    ) -> None:
        self._link = link
        self._fallback = fallback
        self._per_call: grpc.aio.UnaryStreamCall[StreamRequest, StreamPiece] | None = None
        self._answered = False  # an event of this stream arrived: too late to fall back
        self._stream_id = stream_id
        self._deadline = deadline
        self._span = span
        self._pieces: deque[StreamPiece] = deque()
        self._arrived = asyncio.Event()
        self._outcome: grpc.aio.AioRpcError | None = None  # set once the stream ended with an error
        self._finished = False  # the last piece arrived
        self._cancelled = False
        self._done_callbacks: list[Callable[[Any], None]] = []

    # --- fed by the open call's reader -----------------------------------------------------------

    def deliver(self, event: inference_pb2.StreamEvent) -> None:
        self._answered = True
        if event.WhichOneof("event") == "piece":
            self._pieces.append(event.piece)
            if event.piece.finished:
                self._end(None)
        else:
            self._end(stream_error(status_pb2.Status.FromString(event.error_status)))
        self._arrived.set()

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        """The open call ended under this stream."""
        if error.code() == METHOD_NOT_SERVED and self._fallback is not None and not self._answered and not self.done():
            self._link.forget(self._stream_id)
            end_stream_span(self._span, error.code())
            self._span = None
            self._per_call = self._fallback()
            for callback in self._done_callbacks:
                self.add_done_callback(callback)
        elif not self.done():
            self._end(error)
        self._arrived.set()

    def _end(self, error: grpc.aio.AioRpcError | None) -> None:
        if self.done():
            return
        if error is None:
            self._finished = True
        else:
            self._outcome = error
        self._link.forget(self._stream_id)
        end_stream_span(self._span, grpc.StatusCode.OK if error is None else error.code())
        self._span = None
        for callback in self._done_callbacks:
            callback(self)

    # --- the call's API --------------------------------------------------------------------------

    async def read(self) -> StreamPiece | Any:  # grpc.aio.EOF is typed as an object
        await self._link.flush()
        while not self._pieces:
            if self._per_call is not None:
                return await self._per_call.read()
            if self._outcome is not None:
                raise self._outcome
            if self._finished or self._cancelled:
                return grpc.aio.EOF
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(self._loop_deadline()):
                    await self._arrived.wait()
            except TimeoutError:
                self._expire()
        return self._pieces.popleft()

    def __aiter__(self) -> AsyncIterator[StreamPiece]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamPiece]:
        while True:
            piece = await self.read()
            if piece is grpc.aio.EOF:
                return
            yield piece

    def _loop_deadline(self) -> float | None:
        if self._deadline is None:
            return None
        return asyncio.get_running_loop().time() + (self._deadline - time.monotonic())

    def _expire(self) -> None:
        self._link.cancel(self._stream_id)
        self._end(_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def cancel(self) -> bool:
        if self._per_call is not None:
            return self._per_call.cancel()
        if self.done():
            return False
        self._cancelled = True
        self._link.cancel(self._stream_id)
        self._end(_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"))
        self._arrived.set()
        return True

    def cancelled(self) -> bool:
        return self._per_call.cancelled() if self._per_call is not None else self._cancelled

    def done(self) -> bool:
        if self._per_call is not None:
            return self._per_call.done()
        return self._finished or self._outcome is not None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._per_call is not None:
            self._per_call.add_done_callback(lambda _call: callback(self))
        elif self.done():
            callback(self)
        else:
            self._done_callbacks.append(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._until_done()
        if self._per_call is not None:
            return await self._per_call.trailing_metadata()
        return self._outcome.trailing_metadata() if self._outcome is not None else grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        await self._until_done()
        if self._per_call is not None:
            return await self._per_call.code()
        return self._outcome.code() if self._outcome is not None else grpc.StatusCode.OK

    async def details(self) -> str:
        await self._until_done()
        if self._per_call is not None:
            return await self._per_call.details()
        return (self._outcome.details() or "") if self._outcome is not None else ""

    async def wait_for_connection(self) -> None:
        await self._link.flush()

    async def _until_done(self) -> None:
        while not self.done() and self._per_call is None:
            self._arrived.clear()
            await self._arrived.wait()


class _OpenCallLink:
    """One open GenerateStreams call: its streams by id, the actions not yet written, and its reader."""

    def __init__(self, call: OpenCall, on_closed: Callable[[_OpenCallLink], None]) -> None:
        self._call = call
        self._on_closed = on_closed
        self._streams: dict[int, MultiplexedStream] = {}
        self._pending: list[inference_pb2.StreamAction] = []
        self._writing = False
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._read())

    def add(self, stream_id: int, stream: MultiplexedStream, action: inference_pb2.StreamAction) -> None:
        self._streams[stream_id] = stream
        self._pending.append(action)

    def forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def cancel(self, stream_id: int) -> None:
        if self.closed or stream_id not in self._streams:
            return
        self._pending.append(inference_pb2.StreamAction(stream_id=stream_id, cancel=inference_pb2.StreamCancel()))
        if not self._writing:
            self._spawn(self.flush())

    async def flush(self) -> None:
        """Writes the pending actions, unless a write is in flight: its writer sends them next, in one
        message with whatever else queued meanwhile."""
        if self._writing or not self._pending or self.closed:
            return
        self._writing = True
        try:
            while self._pending and not self.closed:
                actions, self._pending = self._pending, []
                await self._call.write(inference_pb2.GenerateStreamsRequest(actions=actions))
        except grpc.aio.AioRpcError as exc:
            self._close(exc)
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            # The call ended under the write; its reader has the status (or is about to).
            self._close(_error(grpc.StatusCode.UNAVAILABLE, "the generation streams call ended"))
        finally:
            self._writing = False

    async def _read(self) -> None:
        error = _error(grpc.StatusCode.UNAVAILABLE, "inference-svc ended the generation streams call")
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    break
                assert isinstance(message, inference_pb2.GenerateStreamsResponse)
                for event in message.events:
                    stream = self._streams.get(event.stream_id)
                    if stream is not None:
                        stream.deliver(event)
        except grpc.aio.AioRpcError as exc:
            error = exc
        finally:
            self._close(error)

    def _close(self, error: grpc.aio.AioRpcError) -> None:
        if self.closed:
            return
        self.closed = True
        self._on_closed(self)
        for stream in list(self._streams.values()):
            stream.fail(error)
        self._streams.clear()
        self._call.cancel()

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def shutdown(self) -> None:
        self._close(_error(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down"))


class MultiplexedGenerateStream(grpc.aio.UnaryStreamMultiCallable[StreamRequest, StreamPiece]):
    """Takes the place of the stub's GenerateStream: each call is a stream on the one open
    GenerateStreams call (opened on first use, and again after it failed).

    With `per_call` (the stub's own GenerateStream), an inference-svc that does not serve
    GenerateStreams (one from before it, during a rolling upgrade) still serves every stream: those
    refused go on as calls of their own, and new ones are calls of their own for `retry_after_s`,
    after which the open call is tried again."""

    def __init__(
        self,
        open_method: OpenMethod,
        per_call: grpc.aio.UnaryStreamMultiCallable[StreamRequest, StreamPiece] | None = None,
        retry_after_s: float = 60.0,
    ) -> None:
        self._open_method = open_method
        self._per_call = per_call
        self._retry_after_s = retry_after_s
        self._per_call_until = 0.0  # time.monotonic() until which streams are calls of their own
        self._link: _OpenCallLink | None = None
        self._ids = itertools.count(1)

    def __call__(
        self,
        request: StreamRequest,
        *,
        timeout: float | None = None,
        metadata: CallMetadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryStreamCall[StreamRequest, StreamPiece]:
        deadline = time.monotonic() + timeout if timeout is not None else None
        if self._per_call is not None and time.monotonic() < self._per_call_until:
            return self._per_call(request, timeout=timeout, metadata=metadata)
        link = self._open()
        stream_id = next(self._ids)
        request_id = next((str(v) for k, v in metadata or () if k == "x-request-id"), "") or request_id_var.get()
        trace_context, span = start_stream_span(STREAM_METHOD)
        fallback = None if self._per_call is None else lambda: self._fall_back(request, deadline, metadata)
        stream = MultiplexedStream(link, stream_id, deadline, span, fallback)
        link.add(stream_id, stream, inference_pb2.StreamAction(
            stream_id=stream_id, start=request, request_id=request_id, trace_context=trace_context
        ))
        return stream

    def _fall_back(
        self, request: StreamRequest, deadline: float | None, metadata: CallMetadata | None
    ) -> grpc.aio.UnaryStreamCall[StreamRequest, StreamPiece]:
        """The GenerateStream call a refused stream becomes; later streams skip the open call for a while."""
        assert self._per_call is not None
        self._per_call_until = time.monotonic() + self._retry_after_s
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        return self._per_call(request, timeout=timeout, metadata=metadata)

    def _open(self) -> _OpenCallLink:
        if self._link is None or self._link.closed:
            # No deadline: the call lives as long as the channel; each stream has its own. Not
            # wait_for_ready: with inference-svc unreachable its streams fail UNAVAILABLE at once, as
            # GenerateStream calls do.
            self._link = _OpenCallLink(self._open_method(), self._closed)
        return self._link

    def _closed(self, link: _OpenCallLink) -> None:
        if self._link is link:
            self._link = None

    def close(self) -> None:
        if self._link is not None:
            self._link.shutdown()
