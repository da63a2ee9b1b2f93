"""What every strategy shares: the Strategy protocol each strategy module implements (as its STRATEGY),
the context a trainer is built from, and the training arguments that come from the job's configuration:
`training_arguments` is the one place a setting becomes a TrainingArguments / SFTConfig / DPOConfig /
RewardConfig / GRPOConfig field (every strategy builds its arguments from it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from transformers import Trainer

from modelforge_training.callbacks import ProgressCallback
from modelforge_training.distributed import distributed_training_arguments
from modelforge_training.events import EventSink
from modelforge_training.runtime import Runtime
from modelforge_training.spec import TrainingConfig, TrainingJobSpec, distributed_mode

# Schedulers that need arguments beyond the step counts.
SCHEDULER_KWARGS: dict[str, dict[str, Any]] = {"cosine_with_min_lr": {"min_lr_rate": 0.1}}


@dataclass
class StrategyContext:
    spec: TrainingJobSpec  # the job as trainer-svc wrote it, unchanged
    runtime: Runtime
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    events: EventSink
    callback: ProgressCallback
    # Settings chosen while building (target modules, chat template ...), recorded with the model.
    details: dict[str, Any] = field(default_factory=dict)
    # Set by build_trainer: what is saved next to the adapter.
    tokenizer: Any = None
    # Objects a strategy keeps from building to evaluation (not recorded).
    kept: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> TrainingConfig:
        """The resolved settings (the spec's config itself)."""
        return self.spec.config


@runtime_checkable
class Strategy(Protocol):
    """One (task, strategy) pair's training: every hook the runtime calls, in that order."""

    def build_trainer(self, context: StrategyContext) -> Any:
        """A transformers/trl Trainer ready to train; sets context.tokenizer to what is saved with the adapter."""
        ...

    def evaluate(self, trainer: Any, context: StrategyContext) -> dict[str, float]:
        """Metrics on context.eval_rows after training."""
        ...

    def save_artifacts(self, trainer: Any, context: StrategyContext, output_dir: Path) -> None:
        """Files beyond the adapter and tokenizer (rank 0 only)."""
        ...


def no_artifacts(trainer: Any, context: StrategyContext, output_dir: Path) -> None:
    """Most strategies save nothing beyond the adapter and the tokenizer."""
    return None


@dataclass(frozen=True)
class StrategyFunctions:
    """A Strategy made of a module's functions (save_artifacts defaults to nothing)."""

    build: Callable[[StrategyContext], Any]
    score: Callable[[Any, StrategyContext], dict[str, float]]
    save: Callable[[Any, StrategyContext, Path], None] = no_artifacts

    def build_trainer(self, context: StrategyContext) -> Any:
        return self.build(context)

    def evaluate(self, trainer: Any, context: StrategyContext) -> dict[str, float]:
        return self.score(trainer, context)

    def save_artifacts(self, trainer: Any, context: StrategyContext, output_dir: Path) -> None:
        self.save(trainer, context, output_dir)


def training_arguments(context: StrategyContext) -> dict[str, Any]:
    config, runtime = context.config, context.runtime
    return {
        "output_dir": context.spec.checkpoint_dir,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        # transformers 5 reads a warmup_steps value below 1 as a ratio of the total steps.
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": config.lr_scheduler_type,
        "lr_scheduler_kwargs": SCHEDULER_KWARGS.get(config.lr_scheduler_type, {}),
        "optim": config.optim,
        "logging_strategy": "steps",
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "eval_strategy": "no",  # evaluated once, after training
        "seed": config.seed,
        "data_seed": config.seed,
        "weight_decay": config.weight_decay,
        "neftune_noise_alpha": config.neftune_noise_alpha if config.HasField("neftune_noise_alpha") else None,
        "bf16": runtime.bf16,
        "fp16": runtime.fp16,
        "gradient_checkpointing": runtime.gradient_checkpointing,
        "use_cpu": not runtime.cuda,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        # Several processes: transformers' (accelerate's) DDP or FSDP2 (distributed.py).
        **distributed_training_arguments(distributed_mode(config), cuda=runtime.cuda),
    }


class MeanLossTrainer(Trainer):
    """Trainer for models whose loss is already a mean over their micro-batch (T5, BERT question
    answering) and which ignore num_items_in_batch: the Trainer must then divide it by the gradient
    accumulation steps, or gradients and the reported loss come out that many times too large."""

    loss_is_scaled_for_ga = False


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
