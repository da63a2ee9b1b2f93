"""Preference rows (prompt / chosen / rejected) -> DPO examples; conversational with a chat template
(the template ends each answer with the end-of-turn token), plain instruction text without one."""

from __future__ import annotations

from typing import Any

from modelforge_training.tasks.text_generation import PLAIN_PROMPT


def to_conversation(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    return {
        "prompt": [{"role": "user", "content": str(row["prompt"])}],
        "chosen": [{"role": "assistant", "content": str(row["chosen"])}],
        "rejected": [{"role": "assistant", "content": str(row["rejected"])}],
    }


def to_plain(row: dict[str, Any]) -> dict[str, str]:
    return {
        "prompt": PLAIN_PROMPT.format(instruction=row["prompt"]),
        "chosen": str(row["chosen"]),
        "rejected": str(row["rejected"]),
    }


def prepare(rows: list[dict[str, Any]], has_chat_template: bool) -> list[dict[str, Any]]:
    convert = to_conversation if has_chat_template else to_plain
    return [convert(row) for row in rows]
