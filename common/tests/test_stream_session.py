"""The server's end of GenerateStreams (modelforge_common.stream_session), driven directly: actions in,
response messages out, with a recording serve_one standing in for GenerateStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
from google.rpc import error_details_pb2, status_pb2

from modelforge.v1 import inference_pb2
from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_common.stream_session import StreamsSession


def start(stream_id: int, prompt: str, request_id: str = "") -> inference_pb2.StreamAction:
    request = inference_pb2.GenerateStreamRequest(params=inference_pb2.GenerationParams(prompt=prompt))
    return inference_pb2.StreamAction(stream_id=stream_id, start=request, request_id=request_id)


def cancel(stream_id: int) -> inference_pb2.StreamAction:
    return inference_pb2.StreamAction(stream_id=stream_id, cancel=inference_pb2.StreamCancel())


class Script:
    """serve_one for the session: a prompt's words as pieces, each after its own gate opens ("wait:"
    prompts), failing as the prompt asks; records what each stream did."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.closed: list[str] = []
        self.started: list[str] = []

    def gate(self, prompt: str) -> asyncio.Event:
        return self.gates.setdefault(prompt, asyncio.Event())

    async def serve(
        self, request: inference_pb2.GenerateStreamRequest
    ) -> AsyncGenerator[inference_pb2.GenerateStreamResponse, None]:
        prompt = request.params.prompt
        self.started.append(prompt)
        try:
            if prompt == "invalid":
                raise InvalidArgument("bad params", [FieldViolation("temperature", "must be at most 2")])
            if prompt == "crash":
                raise RuntimeError("secret detail")
            if prompt.startswith("wait:"):
                await self.gate(prompt).wait()
            words = prompt.split()
            for index, word in enumerate(words, start=1):
                if index == 2 and prompt.startswith("pause:"):
                    await self.gate(prompt).wait()
                yield inference_pb2.GenerateStreamResponse(text=word, finished=index == len(words),
                                                           tokens_generated=index)
        finally:
            self.closed.append(prompt)


class Requests:
    """The caller's side of the call: messages of actions pushed by the test, ended by close()."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[inference_pb2.GenerateStreamsRequest | None] = asyncio.Queue()

    def send(self, *actions: inference_pb2.StreamAction) -> None:
        self._queue.put_nowait(inference_pb2.GenerateStreamsRequest(actions=list(actions)))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[inference_pb2.GenerateStreamsRequest]:
        while (message := await self._queue.get()) is not None:
            yield message


def events_by_stream(messages: list[inference_pb2.GenerateStreamsResponse]) -> dict[int, list[object]]:
    seen: dict[int, list[object]] = {}
    for message in messages:
        for event in message.events:
            kind = event.WhichOneof("event")
            seen.setdefault(event.stream_id, []).append(
                event.piece.text if kind == "piece" else status_pb2.Status.FromString(event.error_status)
            )
    return seen


async def collect(session: StreamsSession, requests: Requests) -> list[inference_pb2.GenerateStreamsResponse]:
    return [message async for message in session.responses(requests.__aiter__())]


async def test_streams_of_one_call_each_get_their_own_pieces_and_the_call_ends_after_them() -> None:
    script, requests = Script(), Requests()
    requests.send(start(1, "red fox runs"), start(2, "blue sky"))
    requests.close()
    messages = await asyncio.wait_for(collect(StreamsSession(script.serve), requests), 5)
    assert events_by_stream(messages) == {1: ["red", "fox", "runs"], 2: ["blue", "sky"]}
    assert sorted(script.closed) == ["blue sky", "red fox runs"]


async def test_pieces_queued_together_leave_in_one_message() -> None:
    script, requests = Script(), Requests()
    session = StreamsSession(script.serve)
    for prompt in ("wait:a one", "wait:a two", "wait:a three"):
        script.gate(prompt)
    requests.send(start(1, "wait:a one"), start(2, "wait:a two"), start(3, "wait:a three"))
    responses = session.responses(requests.__aiter__())
    first = asyncio.ensure_future(responses.__anext__())
    await asyncio.sleep(0.05)
    assert not first.done() and len(script.started) == 3  # all three started, nothing to send yet
    for gate in script.gates.values():
        gate.set()  # the three streams' first pieces are made in one loop pass, as one decoding step's
    message = await asyncio.wait_for(first, 5)
    assert {event.stream_id for event in message.events} == {1, 2, 3}
    requests.close()
    rest = [m async for m in responses]
    assert events_by_stream([message, *rest]) == {
        1: ["wait:a", "one"], 2: ["wait:a", "two"], 3: ["wait:a", "three"]}


async def test_the_last_piece_made_while_a_message_is_sent_still_goes_out() -> None:
    script, requests = Script(), Requests()
    requests.send(start(1, "pause:a b"))
    requests.close()
    responses = StreamsSession(script.serve).responses(requests.__aiter__())
    first = await asyncio.wait_for(responses.__anext__(), 5)
    # While the first message is being sent (the generator waits at its yield), the stream makes
    # its last piece and ends; the call has no more requests, yet that piece must still be sent.
    script.gate("pause:a b").set()
    await asyncio.sleep(0.05)
    assert script.closed == ["pause:a b"]
    assert events_by_stream([first, *await _drain(responses)]) == {1: ["pause:a", "b"]}


async def test_a_domain_error_ends_its_stream_with_its_status_and_violations_others_go_on() -> None:
    script, requests = Script(), Requests()
    requests.send(start(1, "invalid"), start(2, "fine words"), start(3, "crash"))
    requests.close()
    seen = events_by_stream(await asyncio.wait_for(collect(StreamsSession(script.serve), requests), 5))
    assert seen[2] == ["fine", "words"]
    (invalid,) = seen[1]
    assert isinstance(invalid, status_pb2.Status)
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and invalid.message == "bad params"
    bad_request = error_details_pb2.BadRequest()
    assert invalid.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("temperature", "must be at most 2")]
    (crashed,) = seen[3]
    assert isinstance(crashed, status_pb2.Status)
    # An unknown failure is INTERNAL without its detail, as the error interceptor answers a call.
    assert crashed.code == grpc.StatusCode.INTERNAL.value[0] and "secret" not in crashed.message


async def test_a_cancel_closes_its_stream_and_sends_nothing_more_for_it() -> None:
    script, requests = Script(), Requests()
    requests.send(start(1, "wait:never comes"), start(2, "quick one"))
    session = StreamsSession(script.serve)
    responses = session.responses(requests.__aiter__())
    first = await asyncio.wait_for(responses.__anext__(), 5)
    assert events_by_stream([first]) == {2: ["quick", "one"]}
    requests.send(cancel(1), cancel(99))  # an unknown or finished stream's cancel is ignored
    requests.close()
    rest = await asyncio.wait_for(asyncio.ensure_future(_drain(responses)), 5)
    assert events_by_stream(rest) == {}
    assert "wait:never comes" in script.closed  # its generator was closed: the batch slot is freed


async def _drain(responses: AsyncIterator[inference_pb2.GenerateStreamsResponse]) -> list[
        inference_pb2.GenerateStreamsResponse]:
    return [message async for message in responses]


async def test_a_stream_id_already_open_is_refused_without_touching_the_open_one() -> None:
    script, requests = Script(), Requests()
    script.gate("wait:slow one")
    requests.send(start(7, "wait:slow one"), start(7, "other"))
    responses = StreamsSession(script.serve).responses(requests.__aiter__())
    first = await asyncio.wait_for(responses.__anext__(), 5)
    (refused,) = events_by_stream([first])[7]
    assert isinstance(refused, status_pb2.Status) and refused.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    script.gate("wait:slow one").set()
    requests.close()
    assert events_by_stream(await _drain(responses)) == {7: ["wait:slow", "one"]}
    assert script.started == ["wait:slow one"]


async def test_when_the_call_goes_away_every_running_stream_is_closed() -> None:
    script, requests = Script(), Requests()
    requests.send(start(1, "wait:x a"), start(2, "wait:y b"))
    responses = StreamsSession(script.serve).responses(requests.__aiter__())
    pending = asyncio.ensure_future(responses.__anext__())
    await asyncio.sleep(0.05)
    assert len(script.started) == 2
    pending.cancel()  # the transport ended the call: grpc cancels the handler
    await asyncio.gather(pending, return_exceptions=True)
    await responses.aclose()
    assert sorted(script.closed) == ["wait:x a", "wait:y b"]
