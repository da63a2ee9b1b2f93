"""Summarization rows (`text`/`summary` or `document`/`summary`) -> training examples.

A causal model learns it as instruction following (prompt = instruction + text, completion = summary);
an encoder-decoder model (T5-style) reads "summarize: <text>" and writes the summary.
"""

from __future__ import annotations

from typing import Any

INSTRUCTION = "Summarize the following text.\n\n{text}"
SEQ2SEQ_PREFIX = "summarize: "


def source_text(row: dict[str, Any]) -> str:
    return str(row["text"] if "text" in row else row["document"])


def to_generation_row(row: dict[str, Any]) -> dict[str, str]:
    return {"prompt": INSTRUCTION.format(text=source_text(row)), "completion": str(row["summary"])}


def seq2seq_source(row: dict[str, Any]) -> str:
    return SEQ2SEQ_PREFIX + source_text(row)
