"""Generated text as one request sees it: tokens decoded incrementally, cut at the first stop
string, with nothing streamed that a stop string could still take back.

Pure Python, shared by every local generation path (batched decoding and generate()).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from modelforge_inference.streaming import Decode, IncrementalDecoder


class StopFilter:
    """Passes text through until a stop string appears; the stop string and what follows it are
    dropped. A tail that could be the start of a stop string is held back until it is decided."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """Text now safe to hand on (possibly empty)."""
        if self.stopped:
            return ""
        text = self._held + piece
        if not self._stops:
            self._held = ""
            return text
        found = [index for index in (text.find(stop) for stop in self._stops) if index >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)]
        keep = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), keep, -1):
                if text.endswith(stop[:length]):
                    keep = length
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end of generation the held-back tail is plain text."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


class RequestOutput:
    """Token ids in, text pieces out through `emit`; `text` is everything emitted, which is the
    whole answer once `finish()` ran."""

    def __init__(self, decode: Decode, stops: Sequence[str] = (), emit: Callable[[str], None] | None = None) -> None:
        self._decoder = IncrementalDecoder(decode)
        self._filter = StopFilter(stops)
        self._emit = emit
        self._pieces: list[str] = []
        self.tokens = 0
        # Nobody reads pieces and no stop string is watched: decode once at the end (a decode per
        # token is most of a small model's per-row cost in a batch).
        self._lazy = emit is None and not stops

    @property
    def stopped(self) -> bool:
        """A stop string was generated: the request is done."""
        return self._filter.stopped

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def push(self, token_ids: Sequence[int]) -> None:
        if self.stopped:
            return
        self.tokens += len(token_ids)
        if self._lazy:
            self._decoder.ids.extend(token_ids)
            return
        self._hand_on(self._filter.push(self._decoder.push(token_ids)))

    def finish(self) -> None:
        if not self.stopped:
            self._hand_on(self._filter.push(self._decoder.finish()))
        self._hand_on(self._filter.flush())

    def _hand_on(self, piece: str) -> None:
        if piece:
            self._pieces.append(piece)
            if self._emit is not None:
                self._emit(piece)
