"""Greedy generation over held-out examples, for metrics that compare generated text (ROUGE)."""

from __future__ import annotations

from typing import Any

import torch

Prompt = str | list[dict[str, str]]


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    *,
    max_new_tokens: int,
    max_input_tokens: int,
    encoder_decoder: bool,
) -> list[str]:
    """One greedy completion per prompt (a chat prompt is rendered with the chat template)."""
    model.eval()
    device = next(model.parameters()).device
    texts = []
    for prompt in prompts:
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
            input_ids = list(ids["input_ids"])[-max_input_tokens:]
        else:
            input_ids = tokenizer(prompt, truncation=True, max_length=max_input_tokens)["input_ids"]
        inputs = torch.tensor([input_ids], device=device)
        output = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[0] if encoder_decoder else output[0, inputs.shape[1] :]
        texts.append(tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
    return texts
