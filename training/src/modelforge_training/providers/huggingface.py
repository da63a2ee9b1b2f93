"""transformers + peft: loads any AutoModel class, optionally 4-bit NF4 (bitsandbytes; CPU or GPU)."""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig
from transformers import AutoTokenizer, BitsAndBytesConfig

from modelforge_training.providers import LoadedModel
from modelforge_training.runtime import Runtime
from modelforge_training.spec import TrainingConfig, TrainingJobSpec


def load_tokenizer(spec: TrainingJobSpec) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(spec.config.model_name, local_files_only=spec.local_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(runtime: Runtime) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]  # transformers leaves its __init__ unannotated
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=runtime.dtype,
    )


def lora_config(config: TrainingConfig, task_type: str, exclude_modules: list[str] | None = None) -> LoraConfig:
    # "all-linear": every linear layer except the output head, whatever the model family calls them
    # (and except exclude_modules: heads trained in full instead).
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type=task_type,
        exclude_modules=exclude_modules,
    )


def load(
    spec: TrainingJobSpec,
    runtime: Runtime,
    auto_class: Any,
    task_type: str,
    exclude_modules: list[str] | None = None,
    **model_kwargs: Any,
) -> LoadedModel:
    """Base model (frozen by peft later) + tokenizer + the LoRA config for the trainer to apply."""
    config = spec.config
    kwargs: dict[str, Any] = {"local_files_only": spec.local_model, "dtype": runtime.dtype, **model_kwargs}
    if config.use_4bit:
        kwargs["quantization_config"] = quantization_config(runtime)
        if runtime.cuda:
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = auto_class.from_pretrained(config.model_name, **kwargs)
    tokenizer = load_tokenizer(spec)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        peft_config=lora_config(config, task_type, exclude_modules),
        details={"lora_target_modules": "all-linear", "quantization": "nf4" if config.use_4bit else "none"},
    )
