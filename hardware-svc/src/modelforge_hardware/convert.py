"""Domain objects <-> modelforge.v1 hardware messages."""

from __future__ import annotations

from modelforge.v1 import hardware_pb2
from modelforge_hardware.estimator import MemoryBreakdown
from modelforge_hardware.proposals import Proposal, Settings, settings_of
from modelforge_hardware.recommendations import Recommendation, TrainingDefaults
from modelforge_hardware.service import HardwareInfo, MemoryAnswer, MemoryRequest


def hardware_to_pb(info: HardwareInfo) -> hardware_pb2.HardwareInfo:
    return hardware_pb2.HardwareInfo(
        gpus=[
            hardware_pb2.Gpu(
                index=gpu.index,
                name=gpu.name,
                total_memory_bytes=gpu.total_memory_bytes,
                free_memory_bytes=gpu.free_memory_bytes,
            )
            for gpu in info.gpus
        ],
        driver_version=info.driver_version,
        cuda_driver_version=info.cuda_driver_version,
        ram_total_bytes=info.system.ram_total_bytes,
        ram_available_bytes=info.system.ram_available_bytes,
        disk_free_bytes=info.system.disk_free_bytes,
        cpu_cores=info.system.cpu_cores,
        device_type=info.device_type,
        profile=info.profile,
        torch_version=info.torch_version,
    )


def defaults_to_pb(defaults: TrainingDefaults) -> hardware_pb2.TrainingDefaults:
    return hardware_pb2.TrainingDefaults(**defaults.model_dump())


def recommendations_to_pb(
    recommendation: Recommendation, hardware: HardwareInfo
) -> hardware_pb2.GetRecommendationsResponse:
    return hardware_pb2.GetRecommendationsResponse(
        task=recommendation.task,
        profile=recommendation.profile,
        recommended_model=recommendation.recommended_model,
        possible_models=list(recommendation.possible_models),
        defaults=defaults_to_pb(recommendation.defaults),
        hardware=hardware_to_pb(hardware),
    )


def memory_request_from_pb(request: hardware_pb2.EstimateMemoryRequest) -> MemoryRequest:
    return MemoryRequest(
        model_name=request.model_name,
        strategy=request.strategy,
        task=request.task,
        lora_r=request.lora_r,
        batch_size=request.batch_size,
        max_seq_length=request.max_seq_length,
        precision=request.precision,
        use_4bit=request.use_4bit,
        gradient_checkpointing=request.gradient_checkpointing,
        gpu_index=request.gpu_index,
        provider=request.provider,
        lora_dropout=request.lora_dropout if request.HasField("lora_dropout") else None,
        gradient_accumulation_steps=request.gradient_accumulation_steps,
        providers=tuple(request.providers),
        world_size=request.world_size,
        distributed=request.distributed,
    )


def breakdown_to_pb(breakdown: MemoryBreakdown) -> hardware_pb2.MemoryBreakdown:
    return hardware_pb2.MemoryBreakdown(
        weights_bytes=breakdown.weights_bytes,
        adapters_bytes=breakdown.adapters_bytes,
        optimizer_bytes=breakdown.optimizer_bytes,
        gradients_bytes=breakdown.gradients_bytes,
        activations_bytes=breakdown.activations_bytes,
        overhead_bytes=breakdown.overhead_bytes,
        total_bytes=breakdown.total_bytes,
        logits_bytes=breakdown.logits_bytes,
        parts=[hardware_pb2.MemoryPart(name=p.name, bytes=p.bytes, detail=p.detail) for p in breakdown.parts],
        preexisting_bytes=breakdown.preexisting_bytes,
    )


def settings_to_pb(settings: Settings) -> hardware_pb2.MemorySettings:
    return hardware_pb2.MemorySettings(
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_seq_length=settings.max_seq_length,
        use_4bit=settings.use_4bit,
        gradient_checkpointing=settings.gradient_checkpointing,
        provider=settings.provider,
        distributed=settings.distributed,
    )


def proposal_to_pb(proposal: Proposal) -> hardware_pb2.MemoryProposal:
    return hardware_pb2.MemoryProposal(
        settings=settings_to_pb(proposal.settings),
        total_bytes=proposal.total_bytes,
        description=proposal.description,
        changed=list(proposal.changed),
    )


def memory_answer_to_pb(answer: MemoryAnswer) -> hardware_pb2.EstimateMemoryResponse:
    return hardware_pb2.EstimateMemoryResponse(
        breakdown=breakdown_to_pb(answer.estimate.breakdown),
        fits=answer.fits,
        available_bytes=answer.available_bytes,
        device=answer.device,
        message=answer.message,
        max_batch_size=answer.max_batch_size,
        proposals=[proposal_to_pb(p) for p in answer.proposals],
        settings=settings_to_pb(
            settings_of(answer.job, answer.gradient_accumulation_steps, answer.distribution.mode)
        ),
        provider=answer.job.provider,
    )
