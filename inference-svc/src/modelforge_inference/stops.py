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
    whole answer once `finish()` ran.

    `due` (PieceChannel.due) says whether the reader wants a piece now. Until it does, new tokens
    are kept as ids and decoded together with the next piece that is due: a streamed request then
    decodes once per hand-over (every 20 ms by default) instead of twice per token, which on a small
    model was a tenth of a decoding step (bench/ANALYSIS.md, Serving). Stop strings are still looked
    for after every token, so generation ends at the step that completes one; the text they let
    through waits for the next due piece."""

    def __init__(
        self,
        decode: Decode,
        stops: Sequence[str] = (),
        emit: Callable[[str], None] | None = None,
        due: Callable[[], bool] | None = None,
    ) -> None:
        self._decoder = IncrementalDecoder(decode)
        self._filter = StopFilter(stops)
        self._emit = emit
        self._due = due
        self._watch_stops = any(stops)
        self._pieces: list[str] = []
        self._unsent: list[str] = []
        self.tokens = 0
        # Nobody reads pieces and no stop string is watched: decode once at the end (a decode per
        # token is most of a small model's per-row cost in a batch).
        self._lazy = emit is None and not self._watch_stops

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
        if self._lazy or not (self._watch_stops or self._is_due()):
            # Decoded with the next piece (IncrementalDecoder.push decodes every id not yet read).
            self._decoder.ids.extend(token_ids)
            return
        self._hand_on(self._filter.push(self._decoder.push(token_ids)))

    def finish(self) -> None:
        if not self.stopped:
            self._hand_on(self._filter.push(self._decoder.finish()), final=True)
        self._hand_on(self._filter.flush(), final=True)

    def _is_due(self) -> bool:
        return self._due is None or self._due()

    def _hand_on(self, piece: str, final: bool = False) -> None:
        if piece:
            self._pieces.append(piece)
            if self._emit is not None:
                self._unsent.append(piece)
        if self._unsent and (final or self._is_due()):
            assert self._emit is not None
            text = "".join(self._unsent)
            self._unsent.clear()
            self._emit(text)
