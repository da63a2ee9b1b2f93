from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from modelforge_inference.domain import SUMMARIZATION, TEXT_GENERATION, GenerationParams
from modelforge_inference.prompts import SUMMARIZE_INSTRUCTION, build_input, plain_summarization_prompt


def test_chat_template_wraps_the_prompt_as_the_user_message(causal_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    model_input = build_input(TEXT_GENERATION, GenerationParams(prompt="Hi there"), tokenizer, False)
    assert model_input.text == "<|user|>\nHi there</s>\n<|assistant|>\n"
    assert not model_input.add_special_tokens


def test_without_a_chat_template_the_prompt_is_sent_as_is(causal_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    tokenizer.chat_template = None
    model_input = build_input(TEXT_GENERATION, GenerationParams(prompt="Hi there"), tokenizer, False)
    assert model_input.text == "Hi there"
    assert model_input.add_special_tokens


def test_summarization_instructs_a_decoder_only_model(causal_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    templated = build_input(SUMMARIZATION, GenerationParams(prompt="Long text."), tokenizer, False)
    assert templated.text.startswith(f"<|user|>\n{SUMMARIZE_INSTRUCTION}\n\nLong text.")
    plain = build_input(SUMMARIZATION, GenerationParams(prompt="Long text."), None, False)
    assert plain.text == plain_summarization_prompt("Long text.") == "Summarize:\nLong text.\nSummary:"


def test_encoder_decoder_models_get_the_raw_text() -> None:
    model_input = build_input(SUMMARIZATION, GenerationParams(prompt="Long text."), None, True)
    assert model_input.text == "Long text."


def test_chat_without_a_template_uses_the_role_prefixed_format(causal_model: Path) -> None:
    from modelforge_inference.domain import ChatMessage

    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    tokenizer.chat_template = None
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
                ChatMessage("user", "Why?"))
    model_input = build_input(TEXT_GENERATION, GenerationParams(messages=messages), tokenizer, False)
    assert model_input.text == "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Why?\nAssistant:"
    assert model_input.add_special_tokens
