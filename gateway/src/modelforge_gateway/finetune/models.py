"""Request and response bodies of the v1 wizard (responses.md) and the memory estimate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from modelforge_gateway.common.body import Body, NonBlank, ProviderName, StrategyName, TaskName
from modelforge_gateway.common.training_params import DistributedName, TrainingParams, setting_field


class WizardStartTrainingRequest(TrainingParams):
    """v1 start: task and model may come from the wizard session instead of the body."""

    task: TaskName | None = None
    model_name: NonBlank | None = None


class WizardStartTrainingResponse(BaseModel):
    success: bool = True
    message: str = "Training started successfully"
    job_id: str


class TaskRequest(Body):
    task: TaskName


class SelectedModelRequest(Body):
    selected_model: NonBlank


class RepoRequest(Body):
    repo_name: NonBlank


class ValidateTaskResponse(BaseModel):
    valid: bool = True
    task: str


class ValidateModelResponse(BaseModel):
    valid: bool = True
    model: str


class ModelInfo(BaseModel):
    id: str
    author: str
    downloads: int
    likes: int
    local: bool = False
    architecture: str | None = None
    gated: bool = False


class ValidateCustomModelResponse(BaseModel):
    valid: bool = True
    repo_name: str
    model_info: ModelInfo


class DetectResponse(BaseModel):
    status_code: int = 200
    profile: str
    task: str
    gpu_name: str
    gpu_total_memory_gb: float
    ram_total_gb: float
    available_diskspace_gb: float
    cpu_cores: int
    model_recommendation: str
    possible_options: list[str]


class SetModelResponse(BaseModel):
    success: bool = True
    selected_model: str
    message: str = "Model selection saved successfully"


class SetCustomModelResponse(BaseModel):
    success: bool = True
    selected_model: str
    message: str = "Custom model validated and saved successfully"
    valid: bool = True
    repo_name: str


class SessionResponse(BaseModel):
    success: bool = True
    task: str | None
    selected_model: str | None
    is_custom_model: bool


class TrainingSettingsResponse(BaseModel):
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    num_train_epochs: float
    max_seq_length: int
    lora_r: int
    lora_alpha: int
    use_4bit: bool
    bf16: bool
    warmup_ratio: float
    lr_scheduler_type: str
    optim: str


class WizardStatusResponse(BaseModel):
    status: Literal["idle", "running", "completed", "error"]
    progress: int
    message: str
    error: str | None
    job_id: str | None = None
    model_id: str | None = None


class SuccessResponse(BaseModel):
    success: bool = True
    message: str


class GpuSpecs(BaseModel):
    index: int
    name: str
    total_memory_gb: float
    free_memory_gb: float


class HardwareSpecsResponse(BaseModel):
    gpu_name: str
    gpu_memory_gb: float
    ram_gb: float
    disk_space_gb: float
    cpu_cores: int
    cuda_version: str | None
    torch_version: str | None
    device_type: str
    profile: str
    gpus: list[GpuSpecs]


class RecommendedModelsResponse(BaseModel):
    task: str
    recommended_model: str
    possible_models: list[str]
    compute_profile: str


class MemoryEstimateRequest(Body):
    model_name: NonBlank
    strategy: StrategyName = "qlora"
    task: TaskName = "text-generation"
    lora_r: int = Field(16, ge=1, le=4096)
    batch_size: int | None = Field(None, ge=1, le=4096)
    per_device_train_batch_size: int | None = Field(None, ge=1, le=4096)
    max_seq_length: int = Field(2048, ge=8, le=1_048_576)
    precision: Literal["bf16", "fp16", "fp32"] | None = None
    bf16: bool | None = None
    use_4bit: bool | None = None
    gradient_checkpointing: bool = True
    gpu_index: int = Field(-1, ge=-1, le=1024)
    # Each provider holds different tensors at the peak; unsloth needs an NVIDIA GPU.
    provider: ProviderName = "huggingface"
    # None: 0. peft keeps a dropped-out copy of each wrapped layer's input when > 0 (the trainer's default is 0.05).
    # At most 0.99: EstimateMemoryRequest carries it as a 32-bit float, where 0.9999999 becomes 1.0.
    lora_dropout: float | None = Field(None, ge=0, le=0.99)
    # Kept by proposals that lower the per-device batch (the effective batch stays the same).
    gradient_accumulation_steps: int = Field(1, ge=1, le=65536)
    # A job of several processes, named and bounded as in a start request: the estimate is per process.
    processes_per_node: int | None = setting_field("processes_per_node")
    num_nodes: int | None = setting_field("num_nodes")
    distributed: DistributedName | None = Field(
        None, description="How several processes share the work (ddp when unset); one process trains alone"
    )

    @property
    def world_size(self) -> int:
        """The job's processes: processes_per_node x num_nodes, each 1 when unset."""
        return (self.processes_per_node or 1) * (self.num_nodes or 1)

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or self.per_device_train_batch_size or 1

    @property
    def effective_precision(self) -> str:
        if self.precision:
            return self.precision
        return "fp32" if self.bf16 is False else "bf16"

    @property
    def effective_use_4bit(self) -> bool:
        return self.use_4bit if self.use_4bit is not None else self.strategy == "qlora"


class MemoryPartResponse(BaseModel):
    name: str
    bytes: int
    gb: float
    detail: str


class MemorySettingsResponse(BaseModel):
    """Start-request fields (POST /api/start_training names them the same)."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    use_4bit: bool
    gradient_checkpointing: bool
    provider: str
    # "ddp" | "fsdp": a proposal may switch ddp to fsdp for a job of several processes.
    distributed: str = "ddp"


class MemoryProposalResponse(BaseModel):
    settings: MemorySettingsResponse
    # The start-request fields that differ from the request's.
    changed: list[str]
    description: str
    total_bytes: int
    total_gb: float


class MemoryBreakdownResponse(BaseModel):
    weights_bytes: int
    weights_gb: float
    adapters_bytes: int
    adapters_gb: float
    optimizer_bytes: int
    optimizer_gb: float
    gradients_bytes: int
    gradients_gb: float
    activations_bytes: int
    activations_gb: float
    overhead_bytes: int
    overhead_gb: float
    logits_bytes: int = 0
    logits_gb: float = 0.0
    total_bytes: int
    total_gb: float
    # The same total in finer named parts (allocator slack, CUDA context, driver reserve...), largest first.
    parts: list[MemoryPartResponse] = []


class MemoryEstimateResponse(BaseModel):
    model_name: str
    fits: bool
    device: str
    message: str
    total_bytes: int
    total_gb: float
    available_bytes: int
    available_gb: float
    breakdown: MemoryBreakdownResponse
    provider: str = "huggingface"
    # The largest per-device batch that fits with the other settings unchanged (0: not even 1).
    max_batch_size: int = 0
    # The three largest parts of the estimate.
    largest_parts: list[MemoryPartResponse] = []
    # When it does not fit: the nearest settings that do, nearest first.
    proposals: list[MemoryProposalResponse] = []
    settings: MemorySettingsResponse | None = None
    # Processes of the job judged (processes_per_node x num_nodes); sizes and fit are per process.
    world_size: int = 1
