"""The response objects of the /v1 API, field for field (and in the order) the JSON bodies carry them.

Pydantic models for the bodies FastAPI serialises; TypedDicts for the stream chunks, which are built
and serialised once per generated token (a plain dict costs nothing to build). Fields the openai SDK
declares but ModelForge has no value for are kept, as null.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel

Auto = Literal["auto"]
FinishReason = Literal["stop", "length"]


# --- models and deletions --------------------------------------------------------------------------


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    shutdown_date: None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class Deleted(BaseModel):
    id: str
    object: Literal["model", "file"]
    deleted: bool = True


# --- files ------------------------------------------------------------------------------------------


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["processed"] = "processed"
    status_details: None = None
    expires_at: None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool


# --- fine-tuning jobs -------------------------------------------------------------------------------


class JobError(BaseModel):
    code: str
    message: str
    param: None = None


class JobHyperparameters(BaseModel):
    n_epochs: int | Auto
    batch_size: int | Auto
    learning_rate_multiplier: float | Auto


class DpoJobHyperparameters(JobHyperparameters):
    beta: float


class SupervisedSettings(BaseModel):
    hyperparameters: JobHyperparameters


class DpoSettings(BaseModel):
    hyperparameters: DpoJobHyperparameters


class SupervisedJobMethod(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedSettings


class DpoJobMethod(BaseModel):
    type: Literal["dpo"] = "dpo"
    dpo: DpoSettings


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: None = None
    integrations: list[Any]
    metadata: None = None
    method: SupervisedJobMethod | DpoJobMethod
    user_provided_suffix: str | None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "error"]
    message: str
    # The training event's own values (progress, metrics, status): JSON as the trainer sent it.
    data: dict[str, Any]
    type: Literal["metrics", "message"]


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    has_more: bool


# --- chat and text completions ----------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    annotations: list[Any] = []
    audio: None = None
    function_call: None = None
    tool_calls: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    created: int
    model: str
    system_fingerprint: None = None
    service_tier: None = None
    moderation: None = None
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    metadata: None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason
    logprobs: None = None


class TextCompletion(BaseModel):
    id: str
    created: int
    model: str
    system_fingerprint: None = None
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]
    usage: Usage


# --- stream chunks (one per token: TypedDicts) ------------------------------------------------------


class UsageDict(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatDelta(TypedDict, total=False):
    # The opening delta has all three; a token's has content; the closing one is empty.
    role: Literal["assistant"]
    content: str
    refusal: None


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None
    logprobs: None


class ChatChunk(TypedDict):
    id: str
    created: int
    model: str
    system_fingerprint: None
    service_tier: None
    moderation: None
    object: Literal["chat.completion.chunk"]
    obfuscation: None
    usage: UsageDict | None
    choices: list[ChatChunkChoice]


class TextChunkChoice(TypedDict):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None


class TextChunk(TypedDict):
    id: str
    created: int
    model: str
    system_fingerprint: None
    object: Literal["text_completion"]
    choices: list[TextChunkChoice]


class TextUsageChunk(TextChunk):
    usage: UsageDict
