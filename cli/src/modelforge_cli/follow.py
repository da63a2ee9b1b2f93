"""Following a training job's event stream across dropped connections.

Pure logic over an abstract connection (`connect(since) -> EventStream`), so it is tested with a
fake source. Guarantees, as far as the server provides the events:
- no event is shown twice: events are de-duplicated by their per-job `seq`;
- none is lost: a reconnect passes `since=<highest seq up to which nothing is missing>`, and a
  server that replays more than that (or everything) is fine too;
- events come out in seq order: the first message of a connection is the job's *current* status
  (often ahead of what we have); it is held back while the server replays the gap before it, and
  replaced by the replayed original, or released when a newer event arrives, the connection ends,
  or nothing comes for `hold_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modelforge_cli.client import CliError, Unreachable

Event = dict[str, Any]
TERMINAL_STATUSES = frozenset({"completed", "error", "stopped", "failed", "cancelled"})


class StreamDropped(Exception):
    """The connection ended abnormally; following goes on with a new connection."""


class FollowError(CliError):
    """Following cannot go on (job unknown, access refused, too many failed reconnects)."""


class EventStream(Protocol):
    async def recv(self) -> Event | None:
        """The next event; None when the server closed the connection cleanly. Raises StreamDropped.
        Must be safe to cancel (it is awaited under a timeout while an event is held back)."""
        ...

    async def close(self) -> None: ...


Connector = Callable[[int | None], Awaitable[EventStream]]


def is_terminal(event: Event) -> bool:
    return event.get("status") in TERMINAL_STATUSES


def seq_of(event: Event) -> int | None:
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None


class EventSequencer:
    """Turns the messages of successive connections into the job's events, each once, in order."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._watermark: int | None = None  # every seq from the first one shown up to this was shown
        self._held: Event | None = None
        self._first_on_connection = False

    @property
    def since(self) -> int | None:
        """The seq to resume after on a reconnect."""
        return self._watermark

    @property
    def holding(self) -> bool:
        return self._held is not None

    def start_connection(self) -> None:
        self._first_on_connection = True

    def accept(self, event: Event) -> list[Event]:
        """The events to show now because `event` arrived (none, it, or a held one and it)."""
        first, self._first_on_connection = self._first_on_connection, False
        seq = seq_of(event)
        if seq is None:
            return [event]  # nothing to order or de-duplicate by
        if seq in self._seen:
            return []
        if self._held is not None:
            return self._accept_while_holding(event, seq)
        expected = 1 if self._watermark is None else self._watermark + 1
        if first and seq > expected:
            self._held = event  # the current status, ahead of us: the server may replay the gap next
            return []
        return [self._emit(event)]

    def flush(self) -> list[Event]:
        """Releases a held event (nothing more came, or the connection ended)."""
        held, self._held = self._held, None
        return [self._emit(held)] if held is not None and seq_of(held) not in self._seen else []

    def _accept_while_holding(self, event: Event, seq: int) -> list[Event]:
        held = self._held
        assert held is not None
        held_seq = seq_of(held)
        assert held_seq is not None
        if seq < held_seq:  # the server replays the gap before the held status
            return [self._emit(event)]
        self._held = None
        if seq == held_seq:  # the replayed original: it may say more (a log line, metrics) than the status
            return [self._emit(event)]
        return [self._emit(held), self._emit(event)]  # a live-only server: the gap will not come

    def _emit(self, event: Event) -> Event:
        seq = seq_of(event)
        assert seq is not None
        self._seen.add(seq)
        if self._watermark is None:
            self._watermark = seq
        while self._watermark + 1 in self._seen:
            self._watermark += 1
        return event


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between reconnects; `max_failures` consecutive failures give up."""

    initial_s: float = 0.25
    factor: float = 2.0
    max_s: float = 5.0
    max_failures: int = 8

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** (failures - 1))


async def follow_events(
    connect: Connector,
    on_event: Callable[[Event], None],
    *,
    retry: RetryPolicy = RetryPolicy(),
    hold_s: float = 0.5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> Event:
    """Calls `on_event` for every event of the job until one has a terminal status; returns that one.
    `on_retry(failures, delay_s, problem)` is told before each reconnect."""
    sequencer = EventSequencer()
    failures = 0
    connected_once = False
    last_problem = "the server closed the connection"

    def deliver(events: list[Event]) -> Event | None:
        nonlocal failures
        if events:
            failures = 0  # progress: only new events count, so a server that keeps dropping us still fails
        for event in events:
            on_event(event)
            if is_terminal(event):
                return event
        return None

    while True:
        stream: EventStream | None = None
        try:
            stream = await connect(sequencer.since)
            connected_once = True
            sequencer.start_connection()
            while True:
                if sequencer.holding:
                    try:
                        event = await asyncio.wait_for(stream.recv(), hold_s)
                    except TimeoutError:
                        if done := deliver(sequencer.flush()):
                            return done
                        continue
                else:
                    event = await stream.recv()
                if event is None:
                    last_problem = "the server closed the connection before the job finished"
                    break
                if done := deliver(sequencer.accept(event)):
                    return done
        except Unreachable as exc:
            if not connected_once:
                raise
            last_problem = str(exc)
        except StreamDropped as exc:
            last_problem = str(exc) or "connection lost"
        finally:
            if stream is not None:
                await stream.close()
        if done := deliver(sequencer.flush()):
            return done
        failures += 1
        if failures > retry.max_failures:
            raise FollowError(f"lost the event stream and could not reconnect: {last_problem}")
        delay = retry.delay(failures)
        if on_retry is not None:
            on_retry(failures, delay, last_problem)
        await sleep(delay)
