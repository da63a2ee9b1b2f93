"""Extractive question answering (SQuAD rows: context / question / answers {text, answer_start}).

Long contexts are split into overlapping windows (stride); each window is labelled with the answer's
token span, or with the [CLS] position when the answer lies outside it. At evaluation the best span
over all windows of an example is mapped back to characters of the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_ANSWER_TOKENS = 30
NO_ANSWER = 0  # the [CLS] position labels windows without the answer


def doc_stride(max_length: int) -> int:
    """Overlap between consecutive windows of one context."""
    return min(128, max_length // 4)


@dataclass(frozen=True)
class Window:
    """Token positions of one tokenized window: which tokens are context, and their character offsets."""

    sequence_ids: Sequence[int | None]
    offsets: Sequence[tuple[int, int]]

    def context_bounds(self) -> tuple[int, int]:
        positions = [i for i, s in enumerate(self.sequence_ids) if s == 1]
        return positions[0], positions[-1]


def answer_positions(window: Window, row: dict[str, Any]) -> tuple[int, int]:
    """(start, end) token positions of the row's first answer in this window, else (NO_ANSWER, NO_ANSWER)."""
    answers = row["answers"]
    start_char = int(answers["answer_start"][0])
    end_char = start_char + len(answers["text"][0])
    first, last = window.context_bounds()
    if window.offsets[first][0] > start_char or window.offsets[last][1] < end_char:
        return NO_ANSWER, NO_ANSWER
    start = first
    while start <= last and window.offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and window.offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def best_span(
    start_logits: Sequence[float],
    end_logits: Sequence[float],
    window: Window,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    top_k: int = 20,
) -> tuple[float, int, int] | None:
    """(score, start_char, end_char) of the best context span in one window, or None."""
    first, last = window.context_bounds()
    starts = sorted(range(first, last + 1), key=lambda i: start_logits[i], reverse=True)[:top_k]
    ends = sorted(range(first, last + 1), key=lambda i: end_logits[i], reverse=True)[:top_k]
    best: tuple[float, int, int] | None = None
    for start in starts:
        for end in ends:
            if end < start or end - start + 1 > max_answer_tokens:
                continue
            score = float(start_logits[start]) + float(end_logits[end])
            if best is None or score > best[0]:
                best = (score, window.offsets[start][0], window.offsets[end][1])
    return best
