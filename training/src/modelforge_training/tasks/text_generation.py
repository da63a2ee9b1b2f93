"""Text generation rows -> prompt/completion examples for SFT (loss on the completion only).

Accepted rows: chat `messages`, `prompt`/`completion`, alpaca `instruction`/`input`/`output`, and
`input`/`output`. With a chat template, examples are conversational (the template is applied by the
trainer and ends each turn with the tokenizer's end-of-turn token, so generation learns to stop);
without one they are plain text in an instruction format, and the trainer appends EOS to the completion.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, str]

PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
PLAIN_SYSTEM = "### System:\n{system}\n\n"


def _user_text(row: dict[str, Any]) -> str:
    if "instruction" in row:
        extra = row.get("input") or ""
        return f"{row['instruction']}\n\n{extra}" if extra.strip() else str(row["instruction"])
    if "prompt" in row:
        return str(row["prompt"])
    return str(row["input"])


def _assistant_text(row: dict[str, Any]) -> str:
    return str(row["completion"] if "completion" in row else row["output"])


def to_conversation(row: dict[str, Any]) -> dict[str, list[Message]]:
    """{"prompt": [messages before the answer], "completion": [the answer]} for any accepted row.
    A chat row is split at its last assistant message; earlier turns are context."""
    if "messages" in row:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return {"prompt": messages[:last], "completion": [messages[last]]}
    return {
        "prompt": [{"role": "user", "content": _user_text(row)}],
        "completion": [{"role": "assistant", "content": _assistant_text(row)}],
    }


def to_plain(row: dict[str, Any]) -> dict[str, str]:
    """{"prompt": instruction-formatted text, "completion": answer} for a tokenizer without a chat template."""
    conversation = to_conversation(row)
    system = "\n".join(m["content"] for m in conversation["prompt"] if m["role"] == "system")
    turns = [m for m in conversation["prompt"] if m["role"] != "system"]
    instruction = "\n\n".join(
        m["content"] if m["role"] == "user" else f"(previous answer) {m['content']}" for m in turns
    )
    prefix = PLAIN_SYSTEM.format(system=system) if system else ""
    return {
        "prompt": prefix + PLAIN_PROMPT.format(instruction=instruction),
        "completion": conversation["completion"][0]["content"],
    }


def prepare(rows: list[dict[str, Any]], has_chat_template: bool) -> list[dict[str, Any]]:
    convert = to_conversation if has_chat_template else to_plain
    return [convert(row) for row in rows]


def generation_prompt(text: str, has_chat_template: bool) -> str | list[Message]:
    """What to feed the trained model for one user message (the inference side's view of the format)."""
    if has_chat_template:
        return [{"role": "user", "content": text}]
    return PLAIN_PROMPT.format(instruction=text)
