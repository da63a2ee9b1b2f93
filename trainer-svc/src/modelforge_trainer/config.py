"""What a user asks for (TrainingRequest) and how it becomes what a job runs with (ResolvedConfig,
defined by the runtime modelforge_training).

Unset optional fields of a request take the trainer's defaults; the resolved configuration is what the
worker trains with and what is recorded with the registered model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from modelforge_training.config import ResolvedConfig

DEFAULT_PROVIDER = "huggingface"
DEFAULT_STRATEGY = "sft"
DEFAULT_DISTRIBUTED = "ddp"
DISTRIBUTED_MODE_NAMES = ("ddp", "fsdp")


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


@dataclass
class TrainingRequest:
    """A TrainingConfig as the user sent it; None means "not set"."""

    task: str = ""
    model_name: str = ""
    provider: str = ""
    strategy: str = ""
    dataset: str = ""
    num_train_epochs: float | None = None
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    learning_rate: float | None = None
    max_seq_length: int | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    use_4bit: bool | None = None
    bf16: bool | None = None
    warmup_ratio: float | None = None
    lr_scheduler_type: str | None = None
    optim: str | None = None
    max_steps: int | None = None
    save_steps: int | None = None
    logging_steps: int | None = None
    eval_split: float | None = None
    seed: int | None = None
    name: str | None = None
    compute_specs: str | None = None
    force: bool = False
    resume_from_job: str | None = None
    dpo_beta: float | None = None
    eval_dataset: str | None = None
    gradient_checkpointing: bool | None = None
    # Jobs of several processes (issue 19): per node (one per GPU on GPU nodes), nodes (more than
    # one only on Kubeflow Trainer), "ddp" | "fsdp" (ddp when unset with more than one process).
    processes_per_node: int | None = None
    num_nodes: int | None = None
    distributed: str | None = None


def resolve(
    request: TrainingRequest,
    defaults: Hyperparameters,
    *,
    model_name: str,
    local_model: bool,
    dataset_path: str,
    eval_dataset_path: str = "",
) -> ResolvedConfig:
    """Fills unset fields from the defaults. Callers validate the request first."""

    def pick(name: str) -> Any:
        value = getattr(request, name)
        return getattr(defaults, name) if value is None else value

    strategy = request.strategy or DEFAULT_STRATEGY
    use_4bit = request.use_4bit if request.use_4bit is not None else strategy == "qlora"
    processes_per_node = request.processes_per_node or 1
    num_nodes = request.num_nodes or 1
    return ResolvedConfig(
        task=request.task,
        model_name=model_name,
        provider=request.provider or DEFAULT_PROVIDER,
        strategy=strategy,
        dataset=request.dataset,
        dataset_path=dataset_path,
        use_4bit=bool(use_4bit),
        name=request.name or "",
        compute_specs=request.compute_specs or "",
        resume_from_job=request.resume_from_job or "",
        local_model=local_model,
        dpo_beta=request.dpo_beta,
        gradient_checkpointing=request.gradient_checkpointing,
        eval_dataset=request.eval_dataset or "",
        eval_dataset_path=eval_dataset_path,
        processes_per_node=processes_per_node,
        num_nodes=num_nodes,
        # Asked for by name, one process runs under torchrun too (the GPU check's nccl path).
        distributed=request.distributed or (DEFAULT_DISTRIBUTED if processes_per_node * num_nodes > 1 else ""),
        **{name: pick(name) for name in HYPERPARAMETER_NAMES},
    )
