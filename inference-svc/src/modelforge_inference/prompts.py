"""The text a model is given for each task. Training formats its examples the same way, so a
fine-tuned model sees at inference what it saw in training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_inference.domain import SUMMARIZATION, ChatMessage, GenerationParams

SUMMARIZE_INSTRUCTION = "Summarize the following text."
# Chat without a chat template: one "Role: content" line per turn, then "Assistant:" for the
# model to continue, e.g. "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: Why?\nAssistant:".
ROLE_PREFIXES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class ModelInput:
    text: str
    # False when a chat template already placed the special tokens in `text`.
    add_special_tokens: bool


def plain_summarization_prompt(text: str) -> str:
    return f"Summarize:\n{text}\nSummary:"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def role_prefixed_chat(messages: tuple[ChatMessage, ...]) -> str:
    """The documented fallback format for a tokenizer without a chat template."""
    lines = [f"{ROLE_PREFIXES[m.role]}: {m.content}" for m in messages]
    return "\n".join([*lines, f"{ROLE_PREFIXES['assistant']}:"])


def _chat_input(messages: tuple[ChatMessage, ...], tokenizer: Any | None, is_encoder_decoder: bool) -> ModelInput:
    if is_encoder_decoder or tokenizer is None or not has_chat_template(tokenizer):
        return ModelInput(role_prefixed_chat(messages), add_special_tokens=True)
    turns = [{"role": m.role, "content": m.content} for m in messages]
    try:
        rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja2 raises TemplateError subclasses (e.g. "roles must alternate")
        message = f"the model's chat template refused these messages: {exc}"
        raise InvalidArgument(message, [FieldViolation("messages", message)]) from exc
    return ModelInput(str(rendered), add_special_tokens=False)


def build_input(task: str, params: GenerationParams, tokenizer: Any | None, is_encoder_decoder: bool) -> ModelInput:
    """Encoder-decoder models get the raw text; decoder-only ones get the user's message through
    the tokenizer's chat template when it has one, else a plain prompt. Chat messages, when
    given, replace the prompt and go through the template (or the role-prefixed fallback)."""
    if params.messages:
        return _chat_input(params.messages, tokenizer, is_encoder_decoder)
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
