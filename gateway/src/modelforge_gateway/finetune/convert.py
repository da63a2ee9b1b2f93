"""v1 wizard: trainer and hardware answers -> the wizard's bodies; the requests it sends (session,
model description, status reset, memory estimate)."""

from __future__ import annotations

from typing import Any

from modelforge.v1 import common_pb2, hardware_pb2, registry_pb2, trainer_pb2
from modelforge_common.status import status_word
from modelforge_gateway.common.protoconv import gib, plain_numbers
from modelforge_gateway.finetune.models import (
    DetectResponse,
    GpuSpecs,
    HardwareSpecsResponse,
    MemoryBreakdownResponse,
    MemoryEstimateRequest,
    MemoryEstimateResponse,
    MemoryPartResponse,
    MemoryProposalResponse,
    MemorySettingsResponse,
    ModelInfo,
    TrainingSettingsResponse,
    WizardStatusResponse,
)


def session_request(session_id: str) -> registry_pb2.GetSessionRequest:
    return registry_pb2.GetSessionRequest(session_id=session_id)


def empty_session(session_id: str) -> registry_pb2.Session:
    """What an unknown session reads as: nothing chosen yet."""
    return registry_pb2.Session(session_id=session_id)


def update_session_request(session_id: str, fields: dict[str, Any]) -> registry_pb2.UpdateSessionRequest:
    """fields: the session's fields to set (task, selected_model, is_custom_model)."""
    return registry_pb2.UpdateSessionRequest(session_id=session_id, **fields)


def describe_request(repo_name: str) -> hardware_pb2.DescribeModelRequest:
    return hardware_pb2.DescribeModelRequest(model_name=repo_name)


def reset_status_request() -> trainer_pb2.ResetTrainingStatusRequest:
    return trainer_pb2.ResetTrainingStatusRequest()


# v1 wizard status words (responses.md TrainingStatus) for the job status words.
V1_STATUS = {
    "idle": "idle",
    "queued": "running",
    "running": "running",
    "completed": "completed",
    "error": "error",
    "stopped": "error",
    # Trained; the model's registration is being retried: not finished yet.
    "registering": "running",
}


def wizard_status(has_job: bool, job: common_pb2.TrainingJob) -> WizardStatusResponse:
    """responses.md /api/finetune/status: idle | running | completed | error."""
    if not has_job:
        return WizardStatusResponse(status="idle", progress=0, message="No training in progress", error=None)
    word = status_word(job.status)
    status = V1_STATUS[word]
    error: str | None = None
    if word == "completed":
        message = "Training completed successfully"
    elif word == "error":
        message, error = "Training failed", job.error or "Training failed"
    elif word == "stopped":
        message, error = "Training was stopped", "Training was stopped"
    elif word == "queued":
        message = job.message or "Training queued"
    elif word == "registering":
        message = job.message or "Training finished; registering the model"
    elif word == "running":
        message = job.message or (
            f"Training epoch {job.current_epoch}/{job.total_epochs} - Step {job.current_step}/{job.total_steps}"
        )
    else:
        message = "No training in progress"
    return WizardStatusResponse(
        status=status,
        progress=round(job.progress),
        message=message,
        error=error,
        job_id=job.job_id,
        model_id=job.model_id or None,
    )


def _first_gpu(hardware: hardware_pb2.HardwareInfo) -> hardware_pb2.Gpu | None:
    return min(hardware.gpus, key=lambda g: g.index) if hardware.gpus else None


def detect(
    task: str, recommendations: hardware_pb2.GetRecommendationsResponse, hardware: hardware_pb2.HardwareInfo
) -> DetectResponse:
    """responses.md /api/finetune/detect. Without a GPU, gpu_name is "" and its memory 0."""
    gpu = _first_gpu(hardware)
    return DetectResponse(
        status_code=200,
        profile=recommendations.profile or hardware.profile,
        task=task,
        gpu_name=gpu.name if gpu else "",
        gpu_total_memory_gb=gib(gpu.total_memory_bytes) if gpu else 0.0,
        ram_total_gb=gib(hardware.ram_total_bytes),
        available_diskspace_gb=gib(hardware.disk_free_bytes),
        cpu_cores=hardware.cpu_cores,
        model_recommendation=recommendations.recommended_model,
        possible_options=list(recommendations.possible_models),
    )


def hardware_specs(hardware: hardware_pb2.HardwareInfo) -> HardwareSpecsResponse:
    """responses.md HardwareSpecs, plus the device type and every GPU."""
    gpu = _first_gpu(hardware)
    return HardwareSpecsResponse(
        gpu_name=gpu.name if gpu else "",
        gpu_memory_gb=gib(gpu.total_memory_bytes) if gpu else 0.0,
        ram_gb=gib(hardware.ram_total_bytes),
        disk_space_gb=gib(hardware.disk_free_bytes),
        cpu_cores=hardware.cpu_cores,
        cuda_version=hardware.cuda_driver_version or None,
        torch_version=hardware.torch_version or None,
        device_type=hardware.device_type or "cpu",
        profile=hardware.profile,
        gpus=[
            GpuSpecs(
                index=g.index,
                name=g.name,
                total_memory_gb=gib(g.total_memory_bytes),
                free_memory_gb=gib(g.free_memory_bytes),
            )
            for g in hardware.gpus
        ],
    )


def training_defaults(defaults: hardware_pb2.TrainingDefaults) -> TrainingSettingsResponse:
    """responses.md /api/finetune/load_settings."""
    return TrainingSettingsResponse(
        per_device_train_batch_size=defaults.per_device_train_batch_size,
        gradient_accumulation_steps=defaults.gradient_accumulation_steps,
        learning_rate=defaults.learning_rate,
        num_train_epochs=plain_numbers(defaults.num_train_epochs),
        max_seq_length=defaults.max_seq_length,
        lora_r=defaults.lora_r,
        lora_alpha=defaults.lora_alpha,
        use_4bit=defaults.use_4bit,
        bf16=defaults.bf16,
        warmup_ratio=defaults.warmup_ratio,
        lr_scheduler_type=defaults.lr_scheduler_type,
        optim=defaults.optim,
    )


def describe_model(reply: hardware_pb2.DescribeModelResponse) -> ModelInfo:
    """responses.md model_info (id, author, downloads, likes) plus what the service also knows."""
    return ModelInfo(
        id=reply.id,
        author=reply.author,
        downloads=int(reply.downloads),
        likes=int(reply.likes),
        local=reply.local,
        architecture=reply.architecture or None,
        gated=reply.gated,
    )


def estimate_request(body: MemoryEstimateRequest) -> hardware_pb2.EstimateMemoryRequest:
    request = hardware_pb2.EstimateMemoryRequest(
        model_name=body.model_name,
        strategy=body.strategy,
        task=body.task,
        lora_r=body.lora_r,
        batch_size=body.effective_batch_size,
        max_seq_length=body.max_seq_length,
        precision=body.effective_precision,
        use_4bit=body.effective_use_4bit,
        gradient_checkpointing=body.gradient_checkpointing,
        gpu_index=body.gpu_index,
        provider=body.provider,
        gradient_accumulation_steps=body.gradient_accumulation_steps,
        world_size=body.world_size,
        distributed=body.distributed or "",
    )
    if body.lora_dropout is not None:
        request.lora_dropout = body.lora_dropout
    return request


_BREAKDOWN_PARTS = ("weights", "adapters", "optimizer", "gradients", "activations", "overhead", "logits", "total")


def _memory_settings(settings: hardware_pb2.MemorySettings) -> MemorySettingsResponse:
    return MemorySettingsResponse(
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_seq_length=settings.max_seq_length,
        use_4bit=settings.use_4bit,
        gradient_checkpointing=settings.gradient_checkpointing,
        provider=settings.provider,
        # An older hardware-svc leaves it empty: it judged every job as ddp.
        distributed=settings.distributed or "ddp",
    )


def _memory_part(part: hardware_pb2.MemoryPart) -> MemoryPartResponse:
    return MemoryPartResponse(name=part.name, bytes=int(part.bytes), gb=gib(part.bytes, 3), detail=part.detail)


def memory_estimate(
    model_name: str, reply: hardware_pb2.EstimateMemoryResponse, world_size: int = 1
) -> MemoryEstimateResponse:
    """EstimateMemory in bytes and GiB ("gb" = 1024**3 bytes, as everywhere in this API); for a job of
    world_size processes every size is one process's."""
    sizes: dict[str, int | float] = {}
    for part in _BREAKDOWN_PARTS:
        value = int(getattr(reply.breakdown, f"{part}_bytes"))
        sizes[f"{part}_bytes"] = value
        sizes[f"{part}_gb"] = gib(value, 3)
    parts = [_memory_part(part) for part in reply.breakdown.parts]
    breakdown = MemoryBreakdownResponse.model_validate({**sizes, "parts": parts})
    return MemoryEstimateResponse(
        model_name=model_name,
        fits=reply.fits,
        device=reply.device,
        message=reply.message,
        total_bytes=breakdown.total_bytes,
        total_gb=breakdown.total_gb,
        available_bytes=int(reply.available_bytes),
        available_gb=gib(reply.available_bytes, 3),
        breakdown=breakdown,
        provider=reply.provider or "huggingface",
        max_batch_size=reply.max_batch_size,
        largest_parts=parts[:3],
        proposals=[
            MemoryProposalResponse(
                settings=_memory_settings(proposal.settings),
                changed=list(proposal.changed),
                description=proposal.description,
                total_bytes=int(proposal.total_bytes),
                total_gb=gib(proposal.total_bytes, 3),
            )
            for proposal in reply.proposals
        ],
        settings=_memory_settings(reply.settings) if reply.HasField("settings") else None,
        world_size=world_size,
    )
