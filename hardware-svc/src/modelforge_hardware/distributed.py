"""The memory of one process of a distributed job (issue 19): what each GPU holds when a job trains in
world_size processes. The single-process estimate (estimator.py) is per process already for what is
per process (activations and logits of its own micro-batch, the CUDA context); this adjusts the parts
the distribution changes:

- DDP keeps a full copy of the weights, adapters, gradients and optimizer state in every process, and
  its reducer holds a second copy of the gradients in flat buckets for the all-reduce.
- FSDP (full shard) splits the weights, adapters, gradients and optimizer state across the processes;
  each process gathers one layer's full parameters at a time (two with the next one prefetched)
  during forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modelforge_hardware.estimator import MemoryEstimate, MemoryPart, TrainingJob, estimate
from modelforge_hardware.model_shape import ModelShape

DDP = "ddp"
FSDP = "fsdp"
MAX_WORLD_SIZE = 65_536
# Layers whose full parameters an FSDP process holds at once: the current one and the prefetched next.
FSDP_GATHERED_LAYERS = 2
SHARDED_PARTS = ("weights", "adapters", "gradients", "optimizer")


def _ceil_div(value: int, by: int) -> int:
    return -(-value // by)


def per_process(result: MemoryEstimate, shape: ModelShape, world_size: int, mode: str) -> MemoryEstimate:
    """The estimate for one of world_size processes training with mode ("ddp" | "fsdp"); the single
    process estimate as it is for world_size 1."""
    if world_size <= 1:
        return result
    breakdown = result.breakdown
    if mode == FSDP:
        shards = {name: _ceil_div(getattr(breakdown, f"{name}_bytes"), world_size) for name in SHARDED_PARTS}
        per_layer = (breakdown.weights_bytes + breakdown.adapters_bytes) / max(shape.num_layers, 1)
        gathered = round(min(FSDP_GATHERED_LAYERS, max(shape.num_layers, 1)) * per_layer)
        parts = [
            replace(part, bytes=shards[part.name], detail=f"{part.detail}; 1/{world_size} of it (FSDP shard)")
            if part.name in shards else part
            for part in breakdown.parts
        ]
        parts.append(MemoryPart("FSDP gathered layers", gathered,
                                f"{FSDP_GATHERED_LAYERS} layers' full parameters gathered at a time"))
        return replace(result, breakdown=replace(
            breakdown,
            weights_bytes=shards["weights"] + gathered,
            adapters_bytes=shards["adapters"],
            gradients_bytes=shards["gradients"],
            optimizer_bytes=shards["optimizer"],
            parts=tuple(sorted(parts, key=lambda part: -part.bytes)),
        ))
    if mode == DDP:
        buckets = breakdown.gradients_bytes
        parts = [*breakdown.parts, MemoryPart("DDP gradient buckets", buckets,
                                              "the reducer's flat copy of the gradients for the all-reduce")]
        return replace(result, breakdown=replace(
            breakdown,
            gradients_bytes=breakdown.gradients_bytes + buckets,
            parts=tuple(sorted(parts, key=lambda part: -part.bytes)),
        ))
    raise ValueError(f"unknown distributed mode {mode!r}")


@dataclass(frozen=True)
class Distribution:
    """How a job trains: in world_size processes with mode ("ddp" | "fsdp"); one process by default."""

    world_size: int = 1
    mode: str = DDP

    @property
    def several_processes(self) -> bool:
        return self.world_size > 1

    def estimate(self, shape: ModelShape, job: TrainingJob) -> MemoryEstimate:
        """The estimate of one of the job's processes: what must fit each device."""
        return per_process(estimate(shape, job), shape, self.world_size, self.mode)


SINGLE_PROCESS = Distribution()
