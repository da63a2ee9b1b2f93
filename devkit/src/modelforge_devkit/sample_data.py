"""Small deterministic datasets for tests and the demo (no download)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
_ANIMALS = ["cat", "dog", "fox", "owl", "bear", "wolf", "frog", "duck"]
_PLACES = ["forest", "river", "city", "garden", "mountain", "desert", "island", "valley"]


def _facts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        color, animal, place = rng.choice(_COLORS), rng.choice(_ANIMALS), rng.choice(_PLACES)
        pairs.append((f"Where does the {color} {animal} live?", f"The {color} {animal} lives in the {place}."))
    return pairs


def text_generation_rows(n: int = 40, seed: int = 0, style: str = "chat") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for question, answer in _facts(n, seed):
        if style == "chat":
            rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
        elif style == "prompt_completion":
            rows.append({"prompt": question, "completion": answer})
        else:
            rows.append({"instruction": question, "input": "", "output": answer})
    return rows


def summarization_rows(n: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for question, answer in _facts(n, seed):
        filler = " ".join(rng.choice(_PLACES + _ANIMALS) for _ in range(12))
        rows.append({"text": f"{question} {answer} Some say {filler}.", "summary": answer})
    return rows


def qa_rows(n: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for question, answer in _facts(n, seed):
        place = answer.rsplit(" ", 1)[1].rstrip(".")
        context = f"Many animals live here. {answer} Nobody knows why."
        start = context.index(place)
        rows.append({"context": context, "question": question, "answers": {"text": [place], "answer_start": [start]}})
    return rows


def preference_rows(n: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    rows = []
    for question, answer in _facts(n, seed):
        wrong = f"The {rng.choice(_COLORS)} {rng.choice(_ANIMALS)} is lost."
        rows.append({"prompt": question, "chosen": answer, "rejected": wrong})
    return rows


def corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: every phrase the sample datasets can produce."""
    lines = [q + " " + a for q, a in _facts(400, 123)]
    lines += [" ".join(_COLORS + _ANIMALS + _PLACES), "Many animals live here. Nobody knows why. Some say"]
    lines += ["user assistant system The the is in a of and to what where does lives lost"]
    return lines


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
