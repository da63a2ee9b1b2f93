"""unsloth's FastLanguageModel (NVIDIA GPU only). The worker has imported unsloth before this module,
so its patches to transformers, trl and peft are in place."""

from __future__ import annotations

from unsloth import FastLanguageModel

from modelforge_training.providers import LoadedModel
from modelforge_training.runtime import Runtime
from modelforge_training.spec import TrainingJobSpec

# The attention and MLP projections of the Llama-style families unsloth supports.
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_causal_lm(spec: TrainingJobSpec, runtime: Runtime) -> LoadedModel:
    config = spec.config
    if not runtime.cuda:
        raise RuntimeError("unsloth requires an NVIDIA GPU")
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=config.model_name,
        max_seq_length=config.max_seq_length,
        dtype=runtime.dtype,
        load_in_4bit=config.use_4bit,
        local_files_only=spec.local_model,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=TARGET_MODULES,
        bias="none",
        use_gradient_checkpointing="unsloth" if runtime.gradient_checkpointing else False,
        random_state=config.seed,
        max_seq_length=config.max_seq_length,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        peft_config=None,
        details={"lora_target_modules": TARGET_MODULES, "quantization": "nf4" if config.use_4bit else "none"},
    )
