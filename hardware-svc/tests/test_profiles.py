"""Profiles from recorded machines, including the spec's RTX 3070 example, and the RAM step-down."""

from __future__ import annotations

import math

import pytest

from modelforge_hardware.probe import GpuReading
from modelforge_hardware.profiles import GIB, Profile, best_gpu, classify
from modelforge_hardware.recorded import RECORDED


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("rtx3070", Profile("mid_range", "cuda")),
        ("rtx4090", Profile("high_end", "cuda")),
        ("h100x2", Profile("high_end", "cuda")),
        ("none", Profile("low_end", "cpu")),
    ],
)
def test_recorded_machines(machine: str, expected: Profile) -> None:
    recorded = RECORDED[machine]
    assert classify(recorded.gpus.gpus, recorded.system.ram_total_bytes) == expected


def test_spec_example_reads_as_documented() -> None:
    # /api/finetune/detect: "profile": "mid_range", "gpu_total_memory_gb": 8.0, "ram_total_gb": 16.0,
    # "available_diskspace_gb": 250.5, "cpu_cores": 8 -- in GiB, the unit NVML's sizes are round in.
    recorded = RECORDED["rtx3070"]
    gpu = recorded.gpus.gpus[0]
    assert gpu.name == "NVIDIA GeForce RTX 3070"
    assert gpu.total_memory_bytes / GIB == 8.0
    assert recorded.system.ram_total_bytes / GIB == 16.0
    assert recorded.system.disk_free_bytes / GIB == 250.5
    assert recorded.system.cpu_cores == 8
    assert recorded.gpus.cuda_driver_version == "12.6"
    assert classify(recorded.gpus.gpus, recorded.system.ram_total_bytes).name == "mid_range"


def _gpu(gib: float, index: int = 0) -> GpuReading:
    total = math.ceil(gib * GIB)
    return GpuReading(index, f"GPU {gib}", total, total)


@pytest.mark.parametrize(
    ("gpu_gib", "expected"),
    [(4.0, "low_end"), (7.19, "low_end"), (7.2, "mid_range"), (8.0, "mid_range"), (12.0, "mid_range"),
     (15.19, "mid_range"), (15.2, "high_end"), (24.0, "high_end"), (79.6, "high_end")],
)
def test_gpu_memory_thresholds(gpu_gib: float, expected: str) -> None:
    assert classify([_gpu(gpu_gib)], 64 * GIB).name == expected


@pytest.mark.parametrize(
    ("gpu_gib", "ram_gib", "expected"),
    [(24.0, 8.0, "mid_range"), (8.0, 8.0, "low_end"), (4.0, 8.0, "low_end"), (24.0, 15.19, "mid_range"),
     (24.0, 15.2, "high_end")],
)
def test_little_ram_steps_the_profile_down(gpu_gib: float, ram_gib: float, expected: str) -> None:
    assert classify([_gpu(gpu_gib)], math.ceil(ram_gib * GIB)).name == expected


def test_best_gpu_decides() -> None:
    gpus = [_gpu(6.0, 0), _gpu(24.0, 1), _gpu(8.0, 2)]
    assert best_gpu(gpus) == gpus[1]
    assert classify(gpus, 64 * GIB).name == "high_end"


def test_no_gpu_is_low_end_on_the_cpu_whatever_the_ram() -> None:
    assert classify([], 2048 * GIB) == Profile("low_end", "cpu")
