"""The text a model is given for each task. Training formats its examples the same way, so a
fine-tuned model sees at inference what it saw in training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelforge_inference.domain import SUMMARIZATION, GenerationParams

SUMMARIZE_INSTRUCTION = "Summarize the following text."


@dataclass(frozen=True)
class ModelInput:
    text: str
    # False when a chat template already placed the special tokens in `text`.
    add_special_tokens: bool


def plain_summarization_prompt(text: str) -> str:
    return f"Summarize:\n{text}\nSummary:"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_input(task: str, params: GenerationParams, tokenizer: Any | None, is_encoder_decoder: bool) -> ModelInput:
    """Encoder-decoder models get the raw text; decoder-only ones get the user's message through
    the tokenizer's chat template when it has one, else a plain prompt."""
    if is_encoder_decoder:
        return ModelInput(params.prompt, add_special_tokens=True)
    if task == SUMMARIZATION:
        message = f"{SUMMARIZE_INSTRUCTION}\n\n{params.prompt}"
        plain = plain_summarization_prompt(params.prompt)
    else:
        message = plain = params.prompt
    if tokenizer is not None and has_chat_template(tokenizer):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        return ModelInput(str(rendered), add_special_tokens=False)
    return ModelInput(plain, add_special_tokens=True)
