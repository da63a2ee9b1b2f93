"""Settings that fit: when a job's estimate does not fit its device, the nearest settings that do.

Nearest first, by how much of the training they change: a smaller per-device batch with more gradient
accumulation (the same effective batch, the same training), FSDP for a DDP job of several processes
(the same training, the weights, gradients and optimizer state sharded across them), gradient
checkpointing (the same training, slower), 4-bit weights (QLoRA: slightly different numerics), the
unsloth provider (GPU, Llama-style decoders, one process), a shorter max_seq_length (longer rows are
truncated); and when no single change is enough, all of them together. Each lever that still does not
fit at the requested batch takes the largest per-device batch that does, with the accumulation raised
to keep the effective batch.

A job of several processes is judged, lever by lever, by one process's estimate (distributed.py), as
its own fit is. FSDP cannot shard 4-bit weights and unsloth trains in one process, so neither is
offered where it cannot run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from modelforge_hardware.distributed import DDP, FSDP, SINGLE_PROCESS, Distribution
from modelforge_hardware.estimator import MemoryEstimate, TrainingJob
from modelforge_hardware.fit import Target, fits
from modelforge_hardware.model_shape import ModelShape

MAX_BATCH_SIZE = 4096
MIN_SEQ_LENGTH = 64


@dataclass(frozen=True)
class Settings:
    """A job's memory-relevant settings, named as a start request names them."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    use_4bit: bool
    gradient_checkpointing: bool
    provider: str
    # "ddp" | "fsdp": how the job's processes share the model (one process: the request's, unused).
    distributed: str = DDP

    def differences(self, other: Settings) -> tuple[str, ...]:
        names = (
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "use_4bit",
            "gradient_checkpointing", "provider", "distributed",
        )
        return tuple(name for name in names if getattr(self, name) != getattr(other, name))


@dataclass(frozen=True)
class Proposal:
    settings: Settings
    total_bytes: int
    description: str
    # Start-request fields that differ from the request's.
    changed: tuple[str, ...]
    # What the job adds to the device (the total less the driver's reserve): what must fit its free memory.
    needed_bytes: int = 0


class _Candidate(NamedTuple):
    job: TrainingJob
    accumulation: int
    distribution: Distribution


def settings_of(job: TrainingJob, accumulation: int, distributed: str = DDP) -> Settings:
    return Settings(
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=accumulation,
        max_seq_length=job.seq_len,
        use_4bit=job.four_bit,
        gradient_checkpointing=job.gradient_checkpointing,
        provider=job.provider,
        distributed=distributed,
    )


def _fits(shape: ModelShape, job: TrainingJob, target: Target, distribution: Distribution) -> bool:
    return fits(distribution.estimate(shape, job), target)


def max_batch_size(
    shape: ModelShape, job: TrainingJob, target: Target, limit: int = MAX_BATCH_SIZE,
    distribution: Distribution = SINGLE_PROCESS,
) -> int:
    """The largest per-device batch that fits with the job's other settings (0 when 1 does not), judged
    by one process's estimate. Memory grows with the batch, so a bisection finds it."""
    if not _fits(shape, replace(job, batch_size=1), target, distribution):
        return 0
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(shape, replace(job, batch_size=middle), target, distribution):
            low = middle
        else:
            high = middle - 1
    return low


def _keeping_effective_batch(
    shape: ModelShape, job: TrainingJob, target: Target, accumulation: int, distribution: Distribution
) -> _Candidate | None:
    """The job as is when it fits, else at the largest batch that fits with the accumulation that keeps
    the effective batch (None when not even a batch of 1 fits)."""
    if _fits(shape, job, target, distribution):
        return _Candidate(job, accumulation, distribution)
    largest = max_batch_size(shape, job, target, limit=job.batch_size, distribution=distribution)
    if largest == 0:
        return None
    effective = job.batch_size * accumulation
    # A batch that divides the effective batch keeps it exactly; down to half the largest that fits.
    batch = next((b for b in range(largest, (largest + 1) // 2 - 1, -1) if b > 0 and effective % b == 0), largest)
    return _Candidate(replace(job, batch_size=batch), math.ceil(effective / batch), distribution)


def _shorter(shape: ModelShape, job: TrainingJob, target: Target, distribution: Distribution) -> TrainingJob | None:
    seq = job.seq_len // 2
    while seq >= MIN_SEQ_LENGTH:
        shorter = replace(job, seq_len=seq)
        if _fits(shape, shorter, target, distribution):
            return shorter
        seq //= 2
    return None


def _sharded(shape: ModelShape, job: TrainingJob, distribution: Distribution) -> Distribution | None:
    """FSDP in place of a DDP job's full copies, where it can run (FSDP cannot shard 4-bit weights)."""
    if distribution.several_processes and distribution.mode == DDP and not job.four_bit and not shape.prequantized_4bit:
        return replace(distribution, mode=FSDP)
    return None


def _four_bit_possible(job: TrainingJob, distribution: Distribution) -> bool:
    """4-bit weights train LoRA adapters, and not in FSDP shards."""
    return not job.full_fine_tuning and not (distribution.several_processes and distribution.mode == FSDP)


def _describe(candidate: _Candidate, request: TrainingJob, request_accumulation: int,
              request_distribution: Distribution) -> str:
    job, accumulation, distribution = candidate
    words = []
    if job.batch_size != request.batch_size:
        effective = request.batch_size * request_accumulation
        words.append(
            f"per_device_train_batch_size {job.batch_size} with gradient_accumulation_steps {accumulation} "
            f"(effective batch {job.batch_size * accumulation}, was {effective})"
        )
    if distribution.mode != request_distribution.mode:
        words.append(
            f"distributed {distribution.mode} (the weights, gradients and optimizer state sharded across the "
            f"{distribution.world_size} processes)"
        )
    if job.gradient_checkpointing and not request.gradient_checkpointing:
        words.append("gradient checkpointing on")
    if job.four_bit and not request.four_bit:
        words.append("4-bit weights (QLoRA)")
    if job.provider != request.provider:
        words.append(f"the {job.provider} provider")
    if job.seq_len != request.seq_len:
        words.append(f"max_seq_length {job.seq_len} (longer rows are truncated)")
    return ", ".join(words)


def _levers(
    shape: ModelShape, job: TrainingJob, unsloth_available: bool, distribution: Distribution
) -> list[tuple[TrainingJob, Distribution]]:
    """Each single change, nearest first (the request itself: only its batch and accumulation change)."""
    levers = [(job, distribution)]
    sharded = _sharded(shape, job, distribution)
    if sharded is not None:
        levers.append((job, sharded))
    if not job.gradient_checkpointing:
        levers.append((replace(job, gradient_checkpointing=True), distribution))
    if _four_bit_possible(job, distribution) and not job.four_bit and not shape.prequantized_4bit:
        levers.append((replace(job, use_4bit=True), distribution))
    lora = not job.full_fine_tuning
    if lora and unsloth_available and not job.unsloth and not distribution.several_processes:
        levers.append((replace(job, provider="unsloth"), distribution))
    return levers


def _combined(
    shape: ModelShape, job: TrainingJob, target: Target, accumulation: int, unsloth_available: bool,
    distribution: Distribution,
) -> _Candidate | None:
    """All the levers together at a batch of 1 (the accumulation keeps the effective batch), shortened
    if need be. A DDP job tries FSDP first (the same numerics), then 4-bit weights with DDP."""
    everything = replace(job, gradient_checkpointing=True, batch_size=1)
    choices: list[tuple[TrainingJob, Distribution]] = []
    sharded = _sharded(shape, job, distribution)
    if sharded is not None:
        choices.append((everything, sharded))
    four_bit = _four_bit_possible(job, distribution)
    everything = replace(everything, use_4bit=job.use_4bit or four_bit)
    if four_bit and unsloth_available and not distribution.several_processes:
        everything = replace(everything, provider="unsloth")
    choices.append((everything, distribution))
    for choice, choice_distribution in choices:
        fitting = choice if _fits(shape, choice, target, choice_distribution) else _shorter(
            shape, choice, target, choice_distribution
        )
        if fitting is not None:
            return _Candidate(fitting, job.batch_size * accumulation, choice_distribution)
    return None


def propose(
    shape: ModelShape, job: TrainingJob, target: Target, accumulation: int, unsloth_available: bool,
    distribution: Distribution = SINGLE_PROCESS,
) -> list[Proposal]:
    """The nearest settings that fit, nearest first; empty when the job fits or nothing does. Every
    candidate is judged by one process's estimate of the job's distribution, as the job's own fit is."""
    if _fits(shape, job, target, distribution):
        return []
    found: list[_Candidate] = []
    for lever, lever_distribution in _levers(shape, job, unsloth_available, distribution):
        kept_batch = _keeping_effective_batch(shape, lever, target, accumulation, lever_distribution)
        if kept_batch is not None:
            found.append(kept_batch)
    shorter = _shorter(shape, job, target, distribution)
    if shorter is not None:
        found.append(_Candidate(shorter, accumulation, distribution))
    if not found:
        combined = _combined(shape, job, target, accumulation, unsloth_available, distribution)
        if combined is None:
            return []
        found.append(combined)

    request = settings_of(job, accumulation, distribution.mode)
    proposals: list[Proposal] = []
    seen: set[Settings] = set()
    for candidate in found:
        settings = settings_of(candidate.job, candidate.accumulation, candidate.distribution.mode)
        if settings in seen:
            continue
        seen.add(settings)
        result: MemoryEstimate = candidate.distribution.estimate(shape, candidate.job)
        proposals.append(
            Proposal(
                settings=settings,
                total_bytes=result.breakdown.total_bytes,
                description=_describe(candidate, job, accumulation, distribution),
                changed=settings.differences(request),
                needed_bytes=result.breakdown.needed_bytes,
            )
        )
    return proposals
