"""Turning generated token ids into text pieces while generation runs.

`IncrementalDecoder` uses the prefix/read offsets that text-generation-inference uses, so a
character split over several byte-level tokens comes out whole and a piece never has to be taken
back; `finish()` returns what the full decode adds beyond the pieces, so the pieces always join
to exactly the non-streamed text. `TokenStreamer` is what `model.generate(streamer=...)` calls
from the generation thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Decode = Callable[[Sequence[int]], str]

_held = threading.local()


def call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> None:
    """`loop.call_soon_threadsafe(callback, *args)`, or, inside `one_wake_per_loop()` on this
    thread, kept until the block ends."""
    held: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., object], tuple[Any, ...]]]] | None = getattr(
        _held, "calls", None
    )
    if held is None:
        loop.call_soon_threadsafe(callback, *args)
    else:
        held.setdefault(loop, []).append((callback, args))


@contextlib.contextmanager
def one_wake_per_loop() -> Iterator[None]:
    """The `call_on_loop` calls made in the block reach each loop as one call, in their order, when
    the block ends. A batched decoding step hands every row its piece: one wake-up per row was a
    self-pipe write each and let the loop take the GIL between rows, so the last row of eight waited
    for seven thread switches (bench/ANALYSIS.md, Serving)."""
    if getattr(_held, "calls", None) is not None:  # nested: the outer block sends them
        yield
        return
    held: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., object], tuple[Any, ...]]]] = {}
    _held.calls = held
    try:
        yield
    finally:
        _held.calls = None
        for loop, calls in held.items():
            loop.call_soon_threadsafe(_run_all, calls)


def _run_all(calls: list[tuple[Callable[..., object], tuple[Any, ...]]]) -> None:
    for callback, args in calls:
        callback(*args)


class IncrementalDecoder:
    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._emitted: list[str] = []

    def push(self, new_ids: Sequence[int]) -> str:
        """Adds tokens; returns the text they complete (possibly empty)."""
        self.ids.extend(new_ids)
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.ids[self._prefix_offset :])
        # A trailing U+FFFD means a multi-byte character is still incomplete: wait for more tokens.
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            piece = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self._emitted.append(piece)
            return piece
        return ""

    def finish(self) -> str:
        """The rest of the full decode after everything emitted so far."""
        full = self._decode(self.ids)
        emitted = "".join(self._emitted)
        rest = full[len(emitted) :] if full.startswith(emitted) else ""
        if rest:
            self._emitted.append(rest)
        return rest


class TokenStreamer:
    """The streamer protocol of transformers' generate(): `put(token_ids)` per step (first the
    prompt, which is skipped) and `end()`. Each non-empty text piece goes to `emit`."""

    def __init__(self, decode: Decode, emit: Callable[[str], None]) -> None:
        self._decoder = IncrementalDecoder(decode)
        self._emit = emit
        self._prompt_skipped = False

    @property
    def token_count(self) -> int:
        return len(self._decoder.ids)

    def put(self, value: Any) -> None:
        if not self._prompt_skipped:
            self._prompt_skipped = True
            return
        piece = self._decoder.push([int(token) for token in value.reshape(-1).tolist()])
        if piece:
            self._emit(piece)

    def end(self) -> None:
        rest = self._decoder.finish()
        if rest:
            self._emit(rest)


class PieceChannel:
    """Text pieces from the generation thread to the event loop.

    Each put wakes the loop at most once (a reader still busy with the last piece gets the new ones
    joined to it). How often pieces are put is the producer's call: it asks `due()` first, which is
    true for the first piece (time to first token) and then once `min_interval_s` has passed since
    the last put, and keeps what it generated meanwhile as token ids, decoded into one piece when the
    next one is due (stops.RequestOutput). Each hand-over becomes one gRPC message and one SSE
    event, and in this process the loop shares the GIL with the generation thread: one message per
    token cost a streamed request about 1.5 ms of CPU per token, and 0.7x the tokens/s of a plain
    generate(); waking the loop per token and sleeping there until the interval passed still cost
    two loop wake-ups and two decodes per token's worth of pieces (bench/ANALYSIS.md, Serving)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        min_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._closed = False
        self._wake_pending = False
        self._ready = asyncio.Event()
        # When the next piece is due; the first one at once.
        self._next_due = -math.inf

    def due(self) -> bool:
        """Called from the producing thread: whether a piece put now keeps to the interval."""
        return self._min_interval_s <= 0 or self._clock() >= self._next_due

    def put(self, piece: str) -> None:
        """Called from any thread."""
        with self._lock:
            self._pieces.append(piece)
            if self._min_interval_s > 0:
                self._next_due = self._clock() + self._min_interval_s
            if self._wake_pending:
                return
            self._wake_pending = True
        call_on_loop(self._loop, self._ready.set)

    def close(self) -> None:
        """Called on the loop; what was put before is still taken first."""
        with self._lock:
            self._closed = True
        self._ready.set()

    async def take(self) -> str | None:
        """Everything put since the last take, joined; None once closed and drained."""
        while True:
            with self._lock:
                if self._pieces:
                    text = "".join(self._pieces)
                    self._pieces.clear()
                    return text
                if self._closed:
                    return None
                # Nothing left: the next put must wake us (a wake-up already scheduled is harmless).
                self._wake_pending = False
                self._ready.clear()
            await self._ready.wait()
