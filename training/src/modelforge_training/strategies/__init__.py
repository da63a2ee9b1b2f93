"""Training strategies. This module says which (task, strategy) pairs the worker implements, with which
providers and in which module; those modules import torch/trl and are loaded by the worker alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Implementation:
    # Exposes build_trainer(context) and evaluate(trainer, context), optionally
    # save_artifacts(trainer, context, output_dir).
    module: str
    providers: tuple[str, ...]


IMPLEMENTED: dict[tuple[str, str], Implementation] = {
    ("text-generation", "sft"): Implementation("modelforge_trainer.strategies.sft", ("huggingface", "unsloth")),
    # QLoRA is SFT on a 4-bit NF4 base model (use_4bit), which the providers load.
    ("text-generation", "qlora"): Implementation("modelforge_trainer.strategies.sft", ("huggingface", "unsloth")),
    ("text-generation", "dpo"): Implementation("modelforge_trainer.strategies.dpo", ("huggingface", "unsloth")),
    ("text-generation", "rlhf"): Implementation("modelforge_trainer.strategies.rlhf", ("huggingface",)),
    ("summarization", "sft"): Implementation("modelforge_trainer.strategies.summarization", ("huggingface",)),
    ("summarization", "qlora"): Implementation("modelforge_trainer.strategies.summarization", ("huggingface",)),
    ("extractive-question-answering", "sft"): Implementation(
        "modelforge_trainer.strategies.extractive_qa", ("huggingface",)
    ),
}

# The (task, strategy) pairs that train in several processes, with the modes each supports; every
# other pair runs in one process. QLoRA's 4-bit weights cannot be sharded by FSDP (bitsandbytes'
# packed storage), so it is DDP only; DPO, RLHF and the seq2seq and QA strategies are not wired for
# several processes (their reference models and extra phases are single-process code).
DISTRIBUTED_MODES: dict[tuple[str, str], tuple[str, ...]] = {
    ("text-generation", "sft"): ("ddp", "fsdp"),
    ("text-generation", "qlora"): ("ddp",),
}
# Providers that train in one process only: unsloth patches the model for a single GPU.
SINGLE_PROCESS_PROVIDERS = frozenset({"unsloth"})

# Providers that only run on an NVIDIA GPU.
GPU_ONLY_PROVIDERS = frozenset({"unsloth"})


def implemented_strategies(task: str) -> list[str]:
    return [strategy for (t, strategy) in IMPLEMENTED if t == task]


def implemented_providers(task: str, strategy: str) -> tuple[str, ...]:
    found = IMPLEMENTED.get((task, strategy))
    return found.providers if found else ()
