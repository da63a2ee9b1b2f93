"""The configuration a job trains with, every setting filled (trainer-svc resolves it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class ResolvedConfig:
    """Every setting a job trains with. The worker may adjust device-dependent fields (bf16) and
    reports the final values back, which is what the registry records."""

    task: str
    model_name: str  # absolute path for a local folder, else the Hub id
    provider: str
    strategy: str
    dataset: str  # what the user named
    dataset_path: str  # absolute path of the JSONL file
    num_train_epochs: float
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    max_seq_length: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    use_4bit: bool
    bf16: bool
    warmup_ratio: float
    lr_scheduler_type: str
    optim: str
    max_steps: int
    save_steps: int
    logging_steps: int
    eval_split: float
    seed: int
    name: str = ""
    compute_specs: str = ""
    resume_from_job: str = ""
    local_model: bool = False
    dpo_beta: float | None = None  # None: the DPO strategy's default
    gradient_checkpointing: bool | None = None  # None: on with a GPU, off on the CPU
    eval_dataset: str = ""  # what the user named; "" holds out eval_split of the dataset instead
    eval_dataset_path: str = ""
    processes_per_node: int = 1
    num_nodes: int = 1
    distributed: str = ""  # "ddp" | "fsdp": runs under torchrun (always with more than one process)

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedConfig:
        """from_dict for values that went through JSON numbers (a protobuf Struct makes 16 into 16.0)."""
        kinds = {f.name: f.type for f in fields(cls)}
        values = {}
        for name, value in data.items():
            if name not in kinds:
                continue
            if kinds[name] == "int" and isinstance(value, float):
                value = int(value)
            values[name] = value
        return cls(**values)

    def training_params(self) -> dict[str, float]:
        """The rest-api.md summary of a model's training."""
        return {
            "num_epochs": float(self.num_train_epochs),
            "batch_size": float(self.per_device_train_batch_size),
            "learning_rate": float(self.learning_rate),
        }
