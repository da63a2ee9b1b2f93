"""Training strategies. This module says which (task, strategy) pairs the runtime implements, with which
providers and in which module; those modules import torch/trl and are loaded by the runtime alone
(`load_strategy`), so trainer-svc may import this one."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelforge_training.strategies.common import Strategy


@dataclass(frozen=True)
class Implementation:
    # A module whose STRATEGY implements strategies.common.Strategy.
    module: str
    providers: tuple[str, ...]


IMPLEMENTED: dict[tuple[str, str], Implementation] = {
    ("text-generation", "sft"): Implementation("modelforge_training.strategies.sft", ("huggingface", "unsloth")),
    # QLoRA is SFT on a 4-bit NF4 base model (use_4bit), which the providers load.
    ("text-generation", "qlora"): Implementation("modelforge_training.strategies.sft", ("huggingface", "unsloth")),
    ("text-generation", "dpo"): Implementation("modelforge_training.strategies.dpo", ("huggingface", "unsloth")),
    ("text-generation", "rlhf"): Implementation("modelforge_training.strategies.rlhf", ("huggingface",)),
    ("summarization", "sft"): Implementation("modelforge_training.strategies.summarization", ("huggingface",)),
    ("summarization", "qlora"): Implementation("modelforge_training.strategies.summarization", ("huggingface",)),
    ("extractive-question-answering", "sft"): Implementation(
        "modelforge_training.strategies.extractive_qa", ("huggingface",)
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


def load_strategy(task: str, strategy: str) -> Strategy:
    """The implementation of a (task, strategy) pair (importing its module: torch, transformers, trl)."""
    from modelforge_training.strategies.common import Strategy

    found = importlib.import_module(IMPLEMENTED[(task, strategy)].module).STRATEGY
    if not isinstance(found, Strategy):
        raise TypeError(f"{IMPLEMENTED[(task, strategy)].module}.STRATEGY does not implement Strategy")
    return found
