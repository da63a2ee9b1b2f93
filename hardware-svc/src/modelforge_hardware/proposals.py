"""Settings that fit: when a job's estimate does not fit its device, the nearest settings that do.

Nearest first, by how much of the training they change: a smaller per-device batch with more gradient
accumulation (the same effective batch, the same training), gradient checkpointing (the same training,
slower), 4-bit weights (QLoRA: slightly different numerics), the unsloth provider (GPU, Llama-style
decoders), a shorter max_seq_length (longer rows are truncated); and when no single change is enough,
all of them together. Each lever that still does not fit at the requested batch takes the largest
per-device batch that does, with the accumulation raised to keep the effective batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from modelforge_hardware.estimator import MemoryEstimate, TrainingJob, estimate
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

    def differences(self, other: Settings) -> tuple[str, ...]:
        names = (
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "use_4bit",
            "gradient_checkpointing", "provider",
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


def settings_of(job: TrainingJob, accumulation: int) -> Settings:
    return Settings(
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=accumulation,
        max_seq_length=job.seq_len,
        use_4bit=job.four_bit,
        gradient_checkpointing=job.gradient_checkpointing,
        provider=job.provider,
    )


def _fits(shape: ModelShape, job: TrainingJob, target: Target) -> bool:
    return fits(estimate(shape, job), target)


def max_batch_size(shape: ModelShape, job: TrainingJob, target: Target, limit: int = MAX_BATCH_SIZE) -> int:
    """The largest per-device batch that fits with the job's other settings (0 when 1 does not).
    Memory grows with the batch, so a bisection finds it."""
    if not _fits(shape, replace(job, batch_size=1), target):
        return 0
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(shape, replace(job, batch_size=middle), target):
            low = middle
        else:
            high = middle - 1
    return low


def _keeping_effective_batch(
    shape: ModelShape, job: TrainingJob, target: Target, accumulation: int
) -> tuple[TrainingJob, int] | None:
    """The job as is when it fits, else at the largest batch that fits with the accumulation that keeps
    the effective batch (None when not even a batch of 1 fits)."""
    if _fits(shape, job, target):
        return job, accumulation
    largest = max_batch_size(shape, job, target, limit=job.batch_size)
    if largest == 0:
        return None
    effective = job.batch_size * accumulation
    # A batch that divides the effective batch keeps it exactly; down to half the largest that fits.
    batch = next((b for b in range(largest, (largest + 1) // 2 - 1, -1) if b > 0 and effective % b == 0), largest)
    return replace(job, batch_size=batch), math.ceil(effective / batch)


def _shorter(shape: ModelShape, job: TrainingJob, target: Target) -> TrainingJob | None:
    seq = job.seq_len // 2
    while seq >= MIN_SEQ_LENGTH:
        shorter = replace(job, seq_len=seq)
        if _fits(shape, shorter, target):
            return shorter
        seq //= 2
    return None


def _describe(job: TrainingJob, accumulation: int, request: TrainingJob, request_accumulation: int) -> str:
    words = []
    if job.batch_size != request.batch_size:
        effective = request.batch_size * request_accumulation
        words.append(
            f"per_device_train_batch_size {job.batch_size} with gradient_accumulation_steps {accumulation} "
            f"(effective batch {job.batch_size * accumulation}, was {effective})"
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


def propose(
    shape: ModelShape, job: TrainingJob, target: Target, accumulation: int, unsloth_available: bool
) -> list[Proposal]:
    """The nearest settings that fit, nearest first; empty when the job fits or nothing does."""
    if _fits(shape, job, target):
        return []
    levers: list[TrainingJob] = [job]
    if not job.gradient_checkpointing:
        levers.append(replace(job, gradient_checkpointing=True))
    lora = not job.full_fine_tuning
    if lora and not job.four_bit and not shape.prequantized_4bit:
        levers.append(replace(job, use_4bit=True))
    if lora and unsloth_available and not job.unsloth:
        levers.append(replace(job, provider="unsloth"))

    found: list[tuple[TrainingJob, int]] = []
    for lever in levers:
        kept_batch = _keeping_effective_batch(shape, lever, target, accumulation)
        if kept_batch is not None:
            found.append(kept_batch)
    shorter = _shorter(shape, job, target)
    if shorter is not None:
        found.append((shorter, accumulation))
    if not found:
        everything = replace(job, gradient_checkpointing=True, use_4bit=job.use_4bit or lora)
        if lora and unsloth_available:
            everything = replace(everything, provider="unsloth")
        everything = replace(everything, batch_size=1)
        accumulation_all = job.batch_size * accumulation
        if not _fits(shape, everything, target):
            shortest = _shorter(shape, everything, target)
            if shortest is None:
                return []
            everything = shortest
        found.append((everything, accumulation_all))

    request = settings_of(job, accumulation)
    proposals: list[Proposal] = []
    seen: set[Settings] = set()
    for fitted, steps in found:
        settings = settings_of(fitted, steps)
        if settings in seen:
            continue
        seen.add(settings)
        result: MemoryEstimate = estimate(shape, fitted)
        proposals.append(
            Proposal(
                settings=settings,
                total_bytes=result.breakdown.total_bytes,
                description=_describe(fitted, steps, job, accumulation),
                changed=settings.differences(request),
                needed_bytes=result.breakdown.needed_bytes,
            )
        )
    return proposals
