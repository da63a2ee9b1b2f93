"""The gateway's end of GenerateStreams (upstream/generation_streams.py) against a real gRPC server whose
InferenceService serves each stream from a script and records every action it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelforge.v1 import inference_pb2, inference_pb2_grpc
from modelforge_common import tracing
from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_common.grpc_server import build_server
from modelforge_common.logging import request_id_var
from modelforge_common.ports import free_port
from modelforge_common.stream_session import StreamsSession
from modelforge_common.testing import eventually
from modelforge_gateway.clients import Clients
from modelforge_gateway.settings import GatewaySettings
from modelforge_gateway.upstream.generation_streams import MultiplexedGenerateStream


class ScriptedInference(inference_pb2_grpc.InferenceServiceServicer):
    """Each stream answers its prompt's words; "invalid" is refused with a field violation; "hold"
    waits until released. Records the calls, the actions and which streams were closed."""

    def __init__(self) -> None:
        self.calls = 0
        self.plain_calls = 0
        self.actions: list[inference_pb2.StreamAction] = []
        self.closed: list[str] = []
        self.release = asyncio.Event()

    async def _serve(
        self, request: inference_pb2.GenerateStreamRequest
    ) -> AsyncGenerator[inference_pb2.GenerateStreamResponse, None]:
        prompt = request.params.prompt
        try:
            if prompt == "invalid":
                raise InvalidArgument("bad", [FieldViolation("params.temperature", "must be at most 2")])
            if prompt == "hold":
                await self.release.wait()
            words = prompt.split()
            for index, word in enumerate(words, start=1):
                yield inference_pb2.GenerateStreamResponse(text=word, finished=index == len(words),
                                                           tokens_generated=index)
        finally:
            self.closed.append(prompt)

    async def GenerateStreams(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        self.calls += 1

        async def recorded() -> AsyncIterator[inference_pb2.GenerateStreamsRequest]:
            async for message in request_iterator:
                self.actions.extend(message.actions)
                yield message

        async for message in StreamsSession(self._serve).responses(recorded()):
            yield message

    async def GenerateStream(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        self.plain_calls += 1
        async for piece in self._serve(request):
            yield piece


def stream_request(prompt: str) -> inference_pb2.GenerateStreamRequest:
    return inference_pb2.GenerateStreamRequest(params=inference_pb2.GenerationParams(prompt=prompt))


@asynccontextmanager
async def serving(port: int, fake: ScriptedInference) -> AsyncIterator[grpc.aio.Server]:
    name = "modelforge.v1.InferenceService"
    server, _, _ = build_server(
        [(inference_pb2_grpc.add_InferenceServiceServicer_to_server, fake, name)], f"127.0.0.1:{port}"
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


@asynccontextmanager
async def multiplexed(port: int) -> AsyncIterator[MultiplexedGenerateStream]:
    """The gateway's GenerateStream stand-in over its own channel to `port`, closed on the way out."""
    channel = make_channel(f"127.0.0.1:{port}", intercepted=False)
    streams = MultiplexedGenerateStream(inference_pb2_grpc.InferenceServiceStub(channel).GenerateStreams)
    try:
        yield streams
    finally:
        streams.close()
        await channel.close()


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


async def read_all(call: Any) -> list[str]:
    return [piece.text async for piece in call]


async def read_after_reconnect(streams: Any, text: str) -> list[str]:
    """The pieces of a stream of `text` once the channel has reconnected (it retries with backoff; until
    then a stream fails UNAVAILABLE)."""
    for _ in range(50):
        try:
            return await read_all(streams(stream_request(text), timeout=10))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    raise AssertionError("never reconnected")


async def test_concurrent_streams_share_one_call_and_each_reads_its_own_pieces(port: int) -> None:
    fake = ScriptedInference()
    async with serving(port, fake), multiplexed(port) as streams:
        prompts = [f"user {index} says hello" for index in range(8)]
        calls = [streams(stream_request(prompt), timeout=10, metadata=(("x-request-id", f"req-{index}"),))
                 for index, prompt in enumerate(prompts)]
        answers = await asyncio.gather(*(read_all(call) for call in calls))
        assert answers == [prompt.split() for prompt in prompts]
        assert fake.calls == 1 and fake.plain_calls == 0
        starts = [action for action in fake.actions if action.WhichOneof("action") == "start"]
        assert sorted(action.request_id for action in starts) == sorted(f"req-{i}" for i in range(8))
        assert len({action.stream_id for action in starts}) == 8
        assert {await call.code() for call in calls} == {grpc.StatusCode.OK}


async def test_a_refused_stream_raises_the_status_and_violations_a_call_would(port: int) -> None:
    fake = ScriptedInference()
    async with serving(port, fake), multiplexed(port) as streams:
        refused = streams(stream_request("invalid"), timeout=10)
        fine = streams(stream_request("still fine"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refused.read()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and raised.value.details() == "bad"
        assert violations_of(raised.value) == [FieldViolation("params.temperature", "must be at most 2")]
        assert await refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await read_all(fine) == ["still", "fine"]


async def test_cancel_and_deadline_stop_the_stream_on_the_server(port: int) -> None:
    fake = ScriptedInference()
    async with serving(port, fake), multiplexed(port) as streams:
        left = streams(stream_request("hold"), timeout=10)
        reading = asyncio.ensure_future(left.read())
        await eventually(lambda: len(fake.actions) == 1)
        assert left.cancel() and not left.cancel()  # a second cancel does nothing
        with pytest.raises(grpc.aio.AioRpcError) as cancelled:
            await reading
        assert cancelled.value.code() == grpc.StatusCode.CANCELLED
        await eventually(lambda: fake.closed == ["hold"])  # the server closed it: its batch slot is free
        assert fake.actions[-1].WhichOneof("action") == "cancel"

        late = streams(stream_request("hold"), timeout=0.2)
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await late.read()
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: fake.closed == ["hold", "hold"])
        assert fake.calls == 1  # both on the same call, which is still open
        assert await read_all(streams(stream_request("after both"), timeout=10)) == ["after", "both"]


async def test_when_inference_goes_away_open_streams_fail_unavailable_and_the_next_reconnects(port: int) -> None:
    fake = ScriptedInference()
    async with multiplexed(port) as streams:
        async with serving(port, fake):
            held = streams(stream_request("hold"), timeout=30)
            reading = asyncio.ensure_future(held.read())
            await eventually(lambda: len(fake.actions) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await reading
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        # Nothing listens now: a new stream fails at once with UNAVAILABLE (not at its deadline).
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await asyncio.wait_for(streams(stream_request("nobody home"), timeout=30).read(), 10)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        restarted = ScriptedInference()
        async with serving(port, restarted):
            assert await read_after_reconnect(streams, "back again") == ["back", "again"]
            assert restarted.calls >= 1


@pytest.mark.parametrize("turned_on", [True, False])
async def test_the_gateway_stub_streams_over_one_call_unless_turned_off(port: int, turned_on: bool) -> None:
    fake = ScriptedInference()
    async with serving(port, fake):
        settings = GatewaySettings(inference_addr=f"127.0.0.1:{port}", inference_streams_multiplexed=turned_on,
                                   log_json=False)
        clients = Clients.open(settings)
        try:
            calls = [clients.inference.GenerateStream(stream_request(f"hi {n}"), timeout=10) for n in range(3)]
            assert [await read_all(call) for call in calls] == [["hi", str(n)] for n in range(3)]
        finally:
            await clients.close()
        assert (fake.calls, fake.plain_calls) == ((1, 0) if turned_on else (0, 3))


async def test_each_stream_is_traced_as_the_call_it_stands_for(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tracer provider is process-wide; tests after this one run with tracing off again.
    monkeypatch.setattr(tracing, "_enabled", tracing.tracing_enabled())
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing("test", exporter=exporter)
    fake = ScriptedInference()
    token = request_id_var.set("req-traced-1")
    try:
        async with serving(port, fake), multiplexed(port) as streams:
            assert await read_all(streams(stream_request("traced words"), timeout=10)) == ["traced", "words"]
            with pytest.raises(grpc.aio.AioRpcError):
                await streams(stream_request("invalid"), timeout=10).read()
    finally:
        request_id_var.reset(token)
    method = "modelforge.v1.InferenceService/GenerateStream"
    spans = [s for s in exporter.get_finished_spans()
             if s.name == method and s.attributes.get("modelforge.request_id") == "req-traced-1"]
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(clients) == len(servers) == 2
    for client in clients:
        (server,) = [s for s in servers if s.parent is not None and s.parent.span_id == client.context.span_id]
        assert server.context.trace_id == client.context.trace_id
        assert server.attributes["rpc.grpc.status_code"] == client.attributes["rpc.grpc.status_code"]
    assert sorted(s.attributes["rpc.grpc.status_code"] for s in servers) == ["INVALID_ARGUMENT", "OK"]


@asynccontextmanager
async def serving_before_generate_streams(port: int, fake: ScriptedInference) -> AsyncIterator[None]:
    """An inference-svc from before GenerateStreams: it serves GenerateStream, and grpc refuses the rest as
    methods it does not have."""
    handler = grpc.method_handlers_generic_handler("modelforge.v1.InferenceService", {
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            fake.GenerateStream,
            request_deserializer=inference_pb2.GenerateStreamRequest.FromString,
            response_serializer=inference_pb2.GenerateStreamResponse.SerializeToString,
        ),
    })

    def add(_servicer: object, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    server, _, _ = build_server([(add, fake, "modelforge.v1.InferenceService")], f"127.0.0.1:{port}")
    await server.start()
    try:
        yield
    finally:
        await server.stop(None)


async def test_an_inference_svc_from_before_generate_streams_still_serves_every_stream(port: int) -> None:
    fake = ScriptedInference()
    async with serving_before_generate_streams(port, fake):
        clients = Clients.open(GatewaySettings(inference_addr=f"127.0.0.1:{port}", log_json=False))
        try:
            # Refused together on the open call, each goes on as a call of its own.
            first = [clients.inference.GenerateStream(stream_request(f"early {n}"), timeout=10) for n in range(3)]
            assert [await read_all(call) for call in first] == [["early", str(n)] for n in range(3)]
            assert [await call.code() for call in first] == [grpc.StatusCode.OK] * 3
            # Later streams are calls of their own from the start, errors included.
            assert await read_all(clients.inference.GenerateStream(stream_request("later"), timeout=10)) == ["later"]
            refused = clients.inference.GenerateStream(stream_request("invalid"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await refused.read()
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert violations_of(raised.value) == [FieldViolation("params.temperature", "must be at most 2")]
        finally:
            await clients.close()
    assert fake.plain_calls == 5


async def test_after_the_retry_time_the_open_call_is_tried_again(port: int) -> None:
    old, new = ScriptedInference(), ScriptedInference()
    channel = make_channel(f"127.0.0.1:{port}", intercepted=False)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    streams = MultiplexedGenerateStream(stub.GenerateStreams, per_call=stub.GenerateStream, retry_after_s=0.2)
    try:
        async with serving_before_generate_streams(port, old):
            assert await read_all(streams(stream_request("old one"), timeout=10)) == ["old", "one"]
        async with serving(port, new):  # inference-svc upgraded
            await asyncio.sleep(0.3)
            assert await read_after_reconnect(streams, "new one") == ["new", "one"]
        assert (old.plain_calls, new.calls, new.plain_calls) == (1, 1, 0)
    finally:
        streams.close()
        await channel.close()
