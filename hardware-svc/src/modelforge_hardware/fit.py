"""Where a job would run and whether its estimate fits there (DESIGN.md section 3, "Memory fit"):
the chosen GPU's free memory, or available system RAM on a node without GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_hardware.estimator import MemoryEstimate
from modelforge_hardware.probe import GpuReading, SystemReading

GIB = 1 << 30
MOST_FREE_GPU = -1


@dataclass(frozen=True)
class Target:
    # "cuda:0", ... or "cpu".
    device: str
    # GPU name, or "CPU" / "system RAM".
    label: str
    available_bytes: int
    gpu: GpuReading | None = None

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None


@dataclass(frozen=True)
class Fit:
    fits: bool
    message: str


def choose_target(gpus: Sequence[GpuReading], system: SystemReading, gpu_index: int) -> Target:
    """The GPU `gpu_index` names (-1: the one with most free memory); the CPU without GPUs."""
    if not gpus:
        return Target("cpu", "system RAM", system.ram_available_bytes)
    if gpu_index == MOST_FREE_GPU:
        gpu = max(gpus, key=lambda g: (g.free_memory_bytes, -g.index))
    else:
        matching = [g for g in gpus if g.index == gpu_index]
        if not matching:
            indices = ", ".join(str(g.index) for g in gpus)
            raise InvalidArgument(
                f"no GPU {gpu_index} on this node",
                [FieldViolation("gpu_index", f"must be -1 (most free memory) or one of {indices}")],
            )
        gpu = matching[0]
    return Target(f"cuda:{gpu.index}", gpu.name, gpu.free_memory_bytes, gpu)


def fits(estimate: MemoryEstimate, target: Target) -> bool:
    """Whether what the job adds fits the target's free memory (a GPU's free memory already excludes
    what the driver holds on the card, which the estimate's total counts as nvidia-smi does)."""
    return estimate.breakdown.needed_bytes <= target.available_bytes


def largest_parts(estimate: MemoryEstimate, count: int = 3) -> str:
    return ", ".join(f"{part.name} {part.bytes / GIB:.2f} GiB" for part in estimate.breakdown.largest(count))


def judge(estimate: MemoryEstimate, target: Target) -> Fit:
    total = estimate.breakdown.total_bytes
    room = f"{target.available_bytes / GIB:.1f} GiB {'free' if target.on_gpu else 'available'}"
    where = f"{target.device} ({target.label})"
    peak = f"Estimated peak {total / GIB:.1f} GiB"
    if estimate.breakdown.preexisting_bytes:
        peak += f" as nvidia-smi counts it ({estimate.breakdown.needed_bytes / GIB:.1f} GiB for the job)"
    if fits(estimate, target):
        return Fit(True, f"{peak} fits in the {room} on {where}.")
    return Fit(False, f"{peak} does not fit in the {room} on {where}. Largest parts: {largest_parts(estimate)}.")
