"""Hardware profile (low_end | mid_range | high_end) of a node.

Sizes here are GiB (2**30 bytes), the unit NVML's totals are round in: an "8 GB" RTX 3070 reports
8192 MiB = 8.0 GiB (8.59e9 bytes), and the spec shows it as ``gpu_total_memory_gb: 8.0``. The
thresholds sit just under the nominal 8 and 16 GB classes because cards and machines report a little
less than their nominal size (firmware and driver reservations): a 16 GB machine shows 15.3-15.6 GiB
of RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelforge_common.catalog import PROFILES
from modelforge_hardware.probe import GpuReading

GIB = 1 << 30

LOW_END_BELOW_GIB = 7.2  # best GPU below this: low_end
MID_RANGE_BELOW_GIB = 15.2  # below this: mid_range; otherwise high_end
RAM_STEP_DOWN_BELOW_GIB = 15.2  # less system RAM than this lowers the profile one level


@dataclass(frozen=True)
class Profile:
    name: str
    # "cuda" or "cpu".
    device_type: str


def best_gpu(gpus: Sequence[GpuReading]) -> GpuReading | None:
    """The GPU with the most total memory (lowest index on ties)."""
    return max(gpus, key=lambda gpu: (gpu.total_memory_bytes, -gpu.index), default=None)


def classify(gpus: Sequence[GpuReading], ram_total_bytes: int) -> Profile:
    best = best_gpu(gpus)
    if best is None:
        return Profile("low_end", "cpu")
    gpu_gib = best.total_memory_bytes / GIB
    if gpu_gib < LOW_END_BELOW_GIB:
        level = 0
    elif gpu_gib < MID_RANGE_BELOW_GIB:
        level = 1
    else:
        level = 2
    if ram_total_bytes / GIB < RAM_STEP_DOWN_BELOW_GIB:
        level = max(0, level - 1)
    return Profile(PROFILES[level], "cuda")
