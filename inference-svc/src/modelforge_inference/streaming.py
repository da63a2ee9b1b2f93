"""Turning generated token ids into text pieces while generation runs.

`IncrementalDecoder` uses the prefix/read offsets that text-generation-inference uses, so a
character split over several byte-level tokens comes out whole and a piece never has to be taken
back; `finish()` returns what the full decode adds beyond the pieces, so the pieces always join
to exactly the non-streamed text. `TokenStreamer` is what `model.generate(streamer=...)` calls
from the generation thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

Decode = Callable[[Sequence[int]], str]


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

    The first piece is handed over at once (time to first token); after that, at most one hand-over
    per `min_interval_s`, with everything generated meanwhile joined into one piece. Each hand-over
    becomes one gRPC message and one SSE event, and in this process the event loop shares the GIL
    with the generation thread: one message per token cost a streamed request about 1.5 ms of CPU
    per token, and 0.7x the tokens/s of a plain generate() (bench/ANALYSIS.md). A reader that is
    still busy when a piece arrives gets it joined with the next ones anyway, and the thread wakes
    the loop at most once per hand-over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, min_interval_s: float = 0.0) -> None:
        self._loop = loop
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._closed = False
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._last_handover: float | None = None

    def put(self, piece: str) -> None:
        """Called from any thread."""
        with self._lock:
            self._pieces.append(piece)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._ready.set)

    def close(self) -> None:
        """Called on the loop; what was put before is still taken first."""
        with self._lock:
            self._closed = True
        self._ready.set()

    async def take(self) -> str | None:
        """Everything put since the last take, joined; None once closed and drained."""
        while True:
            with self._lock:
                waiting, closed = bool(self._pieces), self._closed
                if not waiting:
                    if closed:
                        return None
                    # Nothing left: the next put must wake us (a wake-up already scheduled is harmless).
                    self._wake_pending = False
                    self._ready.clear()
            if waiting:
                break
            await self._ready.wait()
        if self._last_handover is not None and not closed:
            delay = self._last_handover + self._min_interval_s - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # what arrives meanwhile joins this hand-over
        with self._lock:
            text = "".join(self._pieces)
            self._pieces.clear()
        self._last_handover = self._loop.time()
        return text
