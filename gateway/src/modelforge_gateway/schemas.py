"""Public request and response bodies (rest-api.md and responses.md, resolved as DESIGN 3 says).

Request models reject bad input with 400 before any service is called; the services check again
(they are the authority on what a dataset or model holds).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from modelforge.v1 import common_pb2
from modelforge_common.catalog import PROFILES, PROVIDERS, STRATEGIES, TASKS
from modelforge_common.training_options import LR_SCHEDULERS, OPTIMIZERS  # the trainer's own lists


def invalid_choice_message(what: str, value: str, choices: tuple[str, ...]) -> str:
    """The responses.md wording: "Invalid task: xyz. Must be one of ['text-generation', ...]"."""
    return f"Invalid {what}: {value}. Must be one of {list(choices)}"


def _one_of(what: str, choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            # The message goes through as a template argument so braces in `value` stay literal.
            message = invalid_choice_message(what, value, choices)
            raise PydanticCustomError("value_error", "{message}", {"message": message})
        return value

    return AfterValidator(check)


def _choices(choices: tuple[str, ...]) -> WithJsonSchema:
    """The OpenAPI document lists the accepted values (the check above keeps the documented message)."""
    return WithJsonSchema({"type": "string", "enum": list(choices)})


# Model names and dataset paths: a Hub id, a file name or a path, never whitespace only.
NON_BLANK_MAX_LENGTH = 1024


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("value_error", "must not be empty")
    if len(value) > NON_BLANK_MAX_LENGTH:
        raise PydanticCustomError("value_error", f"must be at most {NON_BLANK_MAX_LENGTH} characters")
    return value.strip()


TaskName = Annotated[str, _one_of("task", TASKS), _choices(TASKS)]
ProviderName = Annotated[str, _one_of("provider", PROVIDERS), _choices(PROVIDERS)]
StrategyName = Annotated[str, _one_of("strategy", STRATEGIES), _choices(STRATEGIES)]
ProfileName = Annotated[str, _one_of("compute_specs", PROFILES), _choices(PROFILES)]
LrSchedulerName = Annotated[str, _one_of("lr_scheduler_type", LR_SCHEDULERS), _choices(LR_SCHEDULERS)]
OptimizerName = Annotated[str, _one_of("optim", OPTIMIZERS), _choices(OPTIMIZERS)]
NonBlank = Annotated[
    str,
    AfterValidator(_not_blank),
    WithJsonSchema({"type": "string", "pattern": r"\S", "maxLength": NON_BLANK_MAX_LENGTH}),
]


# Bounds keep every value inside its protobuf field (an int32 overflow would otherwise be a 500).
INT32_MAX = 2**31 - 1
JSON_SAFE_INT = 2**53 - 1


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or any(_takes_bool(arg) for arg in get_args(annotation))


class _Body(BaseModel):
    # One rule for every request body: a field the API does not know is refused with 400 naming it,
    # never dropped silently (the caller would believe a setting applied that did not).
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true/false as 1/0 for a number; the document says integer or
        # number, so a boolean there is the caller's mistake (e.g. "seed": false), not a zero.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
            raise PydanticCustomError("type_error", "must not be true or false")
        return value


# --- training -----------------------------------------------------------------------------------


class TrainingParams(_Body):
    """Every TrainingConfig field except task/model_name; unset ones take the trainer's defaults."""

    provider: ProviderName = "huggingface"
    strategy: StrategyName = "sft"
    dataset: NonBlank
    num_train_epochs: float | None = Field(None, gt=0, le=1000)
    per_device_train_batch_size: int | None = Field(None, ge=1, le=4096)
    gradient_accumulation_steps: int | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0, lt=1)
    # The trainer's own bounds (validation.py), so the document offers nothing the trainer refuses.
    max_seq_length: int | None = Field(None, ge=16, le=131_072)
    lora_r: int | None = Field(None, ge=1, le=4096)
    lora_alpha: int | None = Field(None, ge=1, le=65536)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    use_4bit: bool | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool | None = None
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    lr_scheduler_type: LrSchedulerName | None = None
    optim: OptimizerName | None = None
    max_steps: int | None = Field(None, ge=-1, le=INT32_MAX)
    save_steps: int | None = Field(None, ge=1, le=INT32_MAX)
    logging_steps: int | None = Field(None, ge=1, le=INT32_MAX)
    eval_split: float | None = Field(None, gt=0, le=0.5)
    seed: int | None = Field(None, ge=0, le=INT32_MAX)
    name: str | None = Field(None, max_length=200)
    compute_specs: ProfileName | None = None
    force: bool = False
    resume_from_job: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,128}$", description="A job id")
    # Jobs of several processes (issue 19); the trainer's own bounds (validation.check_distributed).
    processes_per_node: int | None = Field(
        None, ge=1, le=64, description="Training processes per node (one per GPU on GPU nodes); 1 when unset"
    )
    num_nodes: int | None = Field(
        None, ge=1, le=1024, description="Nodes; more than 1 only where the trainer runs jobs on Kubeflow Trainer"
    )
    distributed: Literal["ddp", "fsdp"] | None = Field(
        None, description="How several processes share the work (ddp when unset with more than one process)"
    )

    def to_pb(self, task: str, model_name: str) -> common_pb2.TrainingConfig:
        fields = self.model_dump(exclude_none=True, exclude={"task", "model_name", "dataset_sha256"})
        return common_pb2.TrainingConfig(task=task, model_name=model_name, **fields)


class StartTrainingRequest(TrainingParams):
    task: TaskName
    model_name: NonBlank
    # Checked by the gateway against the registry's copy before the trainer is called (409 on a
    # mismatch): GET /api/models/{id}/lineage puts it in its `reproduce` body.
    dataset_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 the stored dataset must still have (lowercase hex)"
    )


class WizardStartTrainingRequest(TrainingParams):
    """v1 start: task and model may come from the wizard session instead of the body."""

    task: TaskName | None = None
    model_name: NonBlank | None = None


class StartTrainingResponse(BaseModel):
    status: Literal["started"] = "started"
    job_id: str
    message: str = "Training started successfully"


class WizardStartTrainingResponse(BaseModel):
    success: bool = True
    message: str = "Training started successfully"
    job_id: str


class TrainingStatusResponse(BaseModel):
    status: str
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    job_id: str | None = None
    message: str = ""
    error: str | None = None


class StopTrainingResponse(BaseModel):
    """rest-api.md's shape; status says what happened: "stopped" (documented), "stopping" when the
    worker had not ended by the time the trainer answered, or the state the job ended in first."""

    status: Literal["stopped", "stopping", "completed", "error", "registering"] = "stopped"
    message: str = "Training stopped successfully"


# --- jobs (queue) -------------------------------------------------------------------------------

JobStatusWord = Literal["queued", "running", "registering", "completed", "error", "stopped"]


class JobResponse(BaseModel):
    """A queued training job as the job store keeps it."""

    job_id: str
    status: JobStatusWord
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str | None
    model_id: str | None
    owner: str
    attempts: int
    last_seq: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    config: dict[str, Any]


class JobListResponse(BaseModel):
    jobs: list[JobResponse]
    total: int


class JobEvent(BaseModel):
    """One /ws/training message (DESIGN 3), as stored in the TRAINING stream."""

    type: str
    job_id: str | None
    seq: int
    timestamp: str
    status: str | None
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str | None
    metrics: dict[str, float]
    model_id: str | None
    epoch: float


class JobEventsResponse(BaseModel):
    job_id: str
    events: list[JobEvent]


# --- v1 wizard ----------------------------------------------------------------------------------


class TaskRequest(_Body):
    task: TaskName


class SelectedModelRequest(_Body):
    selected_model: NonBlank


class RepoRequest(_Body):
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


class MemoryEstimateRequest(_Body):
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


# --- system -------------------------------------------------------------------------------------


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"
    version: str = "v2"


class InfoResponse(BaseModel):
    providers: list[str]
    strategies: list[str]
    tasks: list[str]
    version: str = "v2"


# --- datasets -----------------------------------------------------------------------------------


class DatasetValidation(BaseModel):
    valid: bool
    errors: list[str]


class DatasetSummary(BaseModel):
    filename: str
    num_examples: int
    size_mb: float
    uploaded_at: str | None
    # The file's own columns, the format field -> column mapping it is read through ({} when its
    # rows have a known shape), and where it came from (format: jsonl, json, csv, parquet or hub;
    # the original file's name and sha256, or the Hub id, config, split, revision and commit sha).
    columns: list[str] = []
    column_mapping: dict[str, str] = {}
    source: dict[str, str] = {}


class UploadDatasetResponse(BaseModel):
    status: Literal["uploaded"] = "uploaded"
    filename: str
    num_examples: int
    validation: DatasetValidation


class HubDatasetResponse(UploadDatasetResponse):
    # What GET /api/datasets lists for it: its source holds the Hub revision and commit sha.
    dataset: DatasetSummary


class DatasetsResponse(BaseModel):
    datasets: list[DatasetSummary]


class DeleteDatasetResponse(BaseModel):
    success: bool = True
    status: Literal["deleted"] = "deleted"
    message: str
    filename: str


# --- models -------------------------------------------------------------------------------------


class ModelSummary(BaseModel):
    id: int
    model_id: str
    name: str
    base_model: str
    task: str
    strategy: str
    provider: str
    created_at: str | None
    size_mb: float
    path: str


class ModelDetails(ModelSummary):
    config: dict[str, Any]
    training_params: dict[str, Any]
    metrics: dict[str, float]
    job_id: str
    adapter_type: str
    # Beside the documented fields: what the model was trained from (null when not recorded).
    lineage: dict[str, Any] | None = None


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
    # Every model matching the filters, not only this page.
    total: int


class ModelLineageResponse(BaseModel):
    """GET /api/models/{id}/lineage: the lineage alone, plus a start_training body that runs it again."""

    model_id: str
    base_model: dict[str, Any]
    dataset: dict[str, Any]
    config: dict[str, Any]
    task: str
    strategy: str
    provider: str
    environment: dict[str, Any]
    job: dict[str, Any]
    metrics: dict[str, float]
    loss_curve: list[dict[str, Any]]
    parent_model_id: str | None
    reproduce: dict[str, Any]


class DeleteModelResponse(BaseModel):
    success: bool = True
    status: Literal["deleted"] = "deleted"
    message: str
    model_id: str


# --- playground ---------------------------------------------------------------------------------

DEFAULT_MAX_NEW_TOKENS = 256


class ChatMessageBody(_Body):
    """One chat turn; the model's chat template is applied to the whole conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class GenerateRequest(_Body):
    """rest-api.md generate; /api/playground/new's max_length is accepted as max_new_tokens.
    `messages` (a conversation) may be sent instead of `prompt`."""

    # The OpenAPI document says what _needs_input checks: a non-blank prompt, question or conversation.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["prompt"], "properties": {"prompt": {"pattern": r"\S"}}},
                {"required": ["question"], "properties": {"question": {"pattern": r"\S"}}},
                {
                    "required": ["messages"],
                    "properties": {
                        "messages": {"minItems": 1, "items": {"properties": {"content": {"pattern": r"\S"}}}}
                    },
                },
            ]
        },
    )

    # Integer bounds stay within 2**53: a JSON number above it is not exact in most clients (nor in
    # a schema validator), so the document's bound would not be the one enforced.
    model_id: Annotated[int, Field(ge=0, le=JSON_SAFE_INT)] | Annotated[str, Field(min_length=1, max_length=300)]
    # Extractive question answering reads these instead of (or besides) the prompt; declared
    # before `prompt` so its check can see them, as are the chat messages.
    context: str = ""
    question: str = ""
    # A conversation, when given, is what the model answers (it wins over prompt), so one with only
    # blank turns is refused whatever else the body holds.
    messages: list[ChatMessageBody] = Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra={"anyOf": [{"maxItems": 0}, {"contains": {"properties": {"content": {"pattern": r"\S"}}}}]},
    )
    # Checked even when left out: a request needs a prompt, a question or messages.
    prompt: str = Field("", validate_default=True)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    max_length: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    # inference-svc's bounds: far below 1 the penalty overflows the logits it divides.
    repetition_penalty: float | None = Field(None, ge=0.01, le=10)
    # Generation ends before any of these strings (not returned).
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(None, ge=-JSON_SAFE_INT, le=JSON_SAFE_INT)

    @field_validator("prompt")
    @classmethod
    def _needs_input(cls, prompt: str, info: ValidationInfo) -> str:
        messages = info.data.get("messages") or []
        if messages and not any(m.content.strip() for m in messages):
            raise PydanticCustomError("value_error", "every message is empty")
        if prompt.strip() or str(info.data.get("question", "")).strip() or messages:
            return prompt
        raise PydanticCustomError("value_error", "prompt must not be empty (or send messages)")

    @property
    def tokens(self) -> int:
        return self.max_new_tokens or self.max_length or DEFAULT_MAX_NEW_TOKENS


class GenerateResponse(BaseModel):
    generated_text: str
    tokens_generated: int
    generation_time_ms: int
    model_id: str
    score: float | None = None
    start: int | None = None
    end: int | None = None
    # Tokens of the input as the model saw it (chat template applied).
    prompt_tokens: int | None = None
    # "stop" (end of sequence or a stop string) | "length" (max_new_tokens reached).
    finish_reason: str | None = None


class PlaygroundNewResponse(GenerateResponse):
    prompt: str


class ModelPathResponse(BaseModel):
    model_path: str
    model_id: str
