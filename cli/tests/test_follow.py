"""follow.py against a fake event source: dropped connections, replays, held current status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelforge_cli.client import Unreachable
from modelforge_cli.follow import EventSequencer, FollowError, RetryPolicy, StreamDropped, follow_events


def ev(seq: int, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {"type": "progress", "job_id": "j", "seq": seq, "status": status, "current_step": seq, **extra}


class FakeStream:
    """Plays `messages`; then ends cleanly ("close"), drops ("drop"), or goes quiet ("hang")."""

    def __init__(self, messages: list[dict[str, Any]], end: str = "close") -> None:
        self.messages = list(messages)
        self.end = end
        self.closed = False

    async def recv(self) -> dict[str, Any] | None:
        if self.messages:
            return self.messages.pop(0)
        if self.end == "drop":
            raise StreamDropped("connection lost (close code 1011)")
        if self.end == "hang":
            await asyncio.sleep(3600)
        return None

    async def close(self) -> None:
        self.closed = True


class FakeSource:
    """connect(since) hands out the scripted connections in order and records each `since`."""

    def __init__(self, *connections: FakeStream | Exception) -> None:
        self.connections = list(connections)
        self.since: list[int | None] = []

    async def __call__(self, since: int | None) -> FakeStream:
        self.since.append(since)
        connection = self.connections.pop(0)
        if isinstance(connection, Exception):
            raise connection
        return connection


async def no_sleep(_: float) -> None:
    return None


async def follow(source: FakeSource, **kwargs: Any) -> tuple[list[int | None], dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    final = await follow_events(source, shown.append, sleep=no_sleep, **kwargs)
    return [event.get("seq") for event in shown], final


async def test_reconnect_with_since_loses_and_repeats_nothing() -> None:
    source = FakeSource(
        FakeStream([ev(1), ev(1), ev(2), ev(3)], end="drop"),
        # the job went on: the current status (seq 5) comes first, then the replay from since=3
        FakeStream([ev(5), ev(4), ev(5), ev(6), ev(7, "completed")]),
    )
    seqs, final = await follow(source)
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert final["status"] == "completed"
    assert source.since == [None, 3]


async def test_server_replaying_everything_is_deduplicated() -> None:
    source = FakeSource(
        FakeStream([ev(1), ev(2)], end="drop"),
        FakeStream([ev(4), ev(1), ev(2), ev(3), ev(4), ev(5, "error", error="boom")]),
    )
    seqs, final = await follow(source)
    assert seqs == [1, 2, 3, 4, 5]
    assert final["error"] == "boom"


async def test_the_replayed_original_replaces_the_held_status() -> None:
    status = {**ev(3), "type": "status"}
    log = {**ev(3), "type": "log", "message": "epoch 1 done"}
    source = FakeSource(FakeStream([ev(1)], end="drop"), FakeStream([status, ev(2), log, ev(4, "completed")]))
    shown: list[dict[str, Any]] = []
    await follow_events(source, shown.append, sleep=no_sleep)
    assert [(e["seq"], e["type"]) for e in shown] == [(1, "progress"), (2, "progress"), (3, "log"), (4, "progress")]


async def test_live_only_server_shows_the_current_status_then_goes_on() -> None:
    # Without replay, seqs 3-4 are not provided by the server; everything it does send is shown once, in order.
    source = FakeSource(FakeStream([ev(1), ev(2)], end="drop"), FakeStream([ev(5), ev(6), ev(7, "completed")]))
    seqs, _ = await follow(source)
    assert seqs == [1, 2, 5, 6, 7]


async def test_held_status_is_released_when_nothing_follows() -> None:
    released = asyncio.Event()
    shown: list[int] = []

    def collect(event: dict[str, Any]) -> None:
        shown.append(event["seq"])
        if event["seq"] == 9:
            released.set()

    source = FakeSource(FakeStream([ev(1)], end="drop"), FakeStream([ev(9)], end="hang"))
    task = asyncio.create_task(follow_events(source, collect, sleep=no_sleep, hold_s=0.05))
    await asyncio.wait_for(released.wait(), 10)
    assert not task.done()  # released by the hold timeout; still following on the open connection
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shown == [1, 9]


async def test_terminal_current_status_ends_at_once() -> None:
    seqs, final = await follow(FakeSource(FakeStream([ev(12, "completed", model_id="m1")], end="hang")), hold_s=0.01)
    assert seqs == [12]
    assert final["model_id"] == "m1"


async def test_clean_close_before_the_end_reconnects_and_flushes_the_held_status() -> None:
    source = FakeSource(FakeStream([ev(4)], end="close"), FakeStream([ev(4), ev(5, "stopped")]))
    seqs, final = await follow(source)
    assert seqs == [4, 5]
    assert final["status"] == "stopped"
    assert source.since == [None, 4]


async def test_events_without_seq_pass_through() -> None:
    seqs, _ = await follow(
        FakeSource(FakeStream([{"type": "status", "status": "queued", "seq": 0}, ev(1), ev(2, "completed")]))
    )
    assert seqs == [0, 1, 2]


async def test_gives_up_after_repeated_failures_with_backoff() -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    retry = RetryPolicy(initial_s=0.1, factor=2, max_s=0.5, max_failures=4)
    source = FakeSource(FakeStream([ev(1)], end="drop"), *[StreamDropped("refused")] * 4, Unreachable("http://x"))
    with pytest.raises(FollowError, match="could not reconnect"):
        await follow_events(source, lambda _: None, retry=retry, sleep=record)
    assert delays == [0.1, 0.2, 0.4, 0.5]


async def test_progress_resets_the_failure_count() -> None:
    retry = RetryPolicy(max_failures=1)
    source = FakeSource(
        FakeStream([ev(1)], end="drop"), FakeStream([ev(2)], end="drop"), FakeStream([ev(3, "completed")])
    )
    seqs, _ = await follow(source, retry=retry)
    assert seqs == [1, 2, 3]


async def test_unreachable_on_the_first_connection_fails_at_once() -> None:
    source = FakeSource(Unreachable("http://127.0.0.1:1"))
    with pytest.raises(Unreachable):
        await follow(source)
    assert source.since == [None]


def test_sequencer_resume_point_skips_over_a_held_status_until_the_gap_is_filled() -> None:
    sequencer = EventSequencer()
    sequencer.start_connection()
    assert [e["seq"] for e in sequencer.accept(ev(1)) + sequencer.accept(ev(2))] == [1, 2]
    sequencer.start_connection()
    assert sequencer.accept(ev(6)) == []
    assert sequencer.holding and sequencer.since == 2
    assert [e["seq"] for e in sequencer.accept(ev(3))] == [3]
    assert sequencer.since == 3
    assert [e["seq"] for e in sequencer.flush()] == [6]
    assert sequencer.since == 3  # 4 and 5 never came: a reconnect asks for them
