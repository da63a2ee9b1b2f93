"""How what a user asks for (a TrainingConfig) becomes what a job runs with (a TrainingJobSpec whose
config has every setting filled): the spec the runtime reads and the registry records.

An unset setting takes, in this order: the trainer's TrainerSettings default_<name> (Hyperparameters),
the default its SettingRule declares in common.proto, or the trainer's own rule below (use_4bit with
qlora, one process, the distributed mode; bf16 and gradient_checkpointing depend on the device).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_training.settings import SETTINGS, has_field
from modelforge_training.spec import DDP, TrainingJobSpec

DEFAULT_PROVIDER = "huggingface"
DEFAULT_STRATEGY = "sft"
DEFAULT_DISTRIBUTED = DDP


@dataclass(frozen=True)
class Hyperparameters:
    """Defaults for every optional TrainingConfig field (TrainerSettings supplies the values)."""

    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    max_seq_length: int = 2048
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    max_steps: int = -1
    save_steps: int = 200
    logging_steps: int = 1
    eval_split: float = 0.1
    seed: int = 42
    bf16: bool = True  # used only where the device supports it


HYPERPARAMETER_NAMES = tuple(f.name for f in fields(Hyperparameters))
# Strings recorded as "" when unset (the registry's config has every key).
_EMPTY_WHEN_UNSET = ("name", "compute_specs", "resume_from_job", "eval_dataset", "distributed")


def asked(request: TrainingConfig, name: str) -> Any:
    """The value the request sets for an optional field, None where it leaves it unset."""
    return getattr(request, name) if has_field(request, name) else None


def resolve(
    request: TrainingConfig,
    defaults: Hyperparameters,
    *,
    model_name: str,
    local_model: bool,
    dataset_path: str,
    eval_dataset_path: str = "",
) -> TrainingJobSpec:
    """The spec of a validated request, every setting filled (the job's id and folders are the runner's)."""
    config = TrainingConfig()
    config.CopyFrom(request)
    config.force = False  # a request's instruction, not a setting (kept on the job's request)
    config.model_name = model_name
    config.provider = request.provider or DEFAULT_PROVIDER
    config.strategy = request.strategy or DEFAULT_STRATEGY
    for name in HYPERPARAMETER_NAMES:
        if not has_field(config, name):
            setattr(config, name, getattr(defaults, name))
    for name, setting in SETTINGS.items():
        if not has_field(config, name) and setting.default is not None:
            setattr(config, name, setting.default)
    if not config.HasField("use_4bit"):
        config.use_4bit = config.strategy == "qlora"
    config.processes_per_node = config.processes_per_node or 1
    config.num_nodes = config.num_nodes or 1
    if not config.distributed and config.processes_per_node * config.num_nodes > 1:
        config.distributed = DEFAULT_DISTRIBUTED
    for name in _EMPTY_WHEN_UNSET:
        setattr(config, name, getattr(config, name))
    return TrainingJobSpec(
        config=config, dataset_path=dataset_path, eval_dataset_path=eval_dataset_path, local_model=local_model
    )
