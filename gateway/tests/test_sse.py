"""EventStreamResponse: frames in order then the end of the body; a client that leaves mid-stream stops
the body where it waits and runs its cleanup; a cancellation from outside is not swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelforge_gateway.sse import EventStreamResponse

pytestmark = pytest.mark.timeout(10)


class Client:
    """The ASGI side: records what was sent; disconnects when told to."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if m["type"] == "http.response.body"]


SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}


async def test_frames_are_sent_in_order_then_the_body_ends() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    client = Client()
    await EventStreamResponse(frames(), headers={"Cache-Control": "no-cache"})(SCOPE, client.receive, client.send)
    start = client.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert client.bodies() == [(b"data: 1\n\n", True), (b"data: 2\n\n", True), (b"", False)]


async def test_a_client_that_leaves_stops_the_body_where_it_waits_and_its_cleanup_runs() -> None:
    upstream = asyncio.Event()  # never set: the next piece never comes
    cleaned_up = asyncio.Event()
    waiting = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            waiting.set()
            await upstream.wait()
            yield b"data: never\n\n"
        finally:
            cleaned_up.set()

    client = Client()
    response = asyncio.ensure_future(EventStreamResponse(frames())(SCOPE, client.receive, client.send))
    await waiting.wait()
    client.leave.set()
    await response  # returns: a client leaving is not an error
    assert cleaned_up.is_set()
    assert client.bodies() == [(b"data: first\n\n", True)]


async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    waiting = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        waiting.set()
        await asyncio.Event().wait()
        yield b"data: never\n\n"

    client = Client()
    response = asyncio.ensure_future(EventStreamResponse(frames())(SCOPE, client.receive, client.send))
    await waiting.wait()
    response.cancel()
    with pytest.raises(asyncio.CancelledError):
        await response

