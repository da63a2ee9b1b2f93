"""Probes: NVML on this (GPU-less) machine, NVML answers mapped to readings, psutil, torch version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from modelforge_hardware.probe import (
    GpuInventory,
    NvmlGpuProbe,
    PsutilSystemProbe,
    cuda_version_string,
    visible_nvml_indices,
)

MIB = 1 << 20


def _nvml_available() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_available(), reason="this machine has an NVIDIA driver")
def test_nvml_probe_without_gpu_reports_no_gpus() -> None:
    assert NvmlGpuProbe().read() == GpuInventory()


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_available(), reason="needs an NVIDIA driver")
def test_nvml_probe_reads_real_gpus() -> None:
    inventory = NvmlGpuProbe().read()

    assert inventory.gpus
    assert all(gpu.total_memory_bytes >= gpu.free_memory_bytes > 0 and gpu.name for gpu in inventory.gpus)
    assert [gpu.index for gpu in inventory.gpus] == list(range(len(inventory.gpus)))
    assert inventory.driver_version
    assert inventory.cuda_driver_version.count(".") == 1


class FakeNvml:
    """pynvml's functions answering as a two-GPU node would."""

    def __init__(self, devices: list[dict[str, Any]], fail_init: bool = False) -> None:
        self.devices = devices
        self.fail_init = fail_init
        self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def init() -> None:
            if self.fail_init:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

        def memory(handle: int) -> SimpleNamespace:
            device = self.devices[handle]
            if device.get("memory_error"):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return SimpleNamespace(total=device["total"], free=device["free"], used=device["total"] - device["free"])

        def shutdown() -> None:
            self.shutdowns += 1

        for name, function in {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlSystemGetDriverVersion": lambda: b"560.35.03",
            "nvmlSystemGetCudaDriverVersion": lambda: 12060,
            "nvmlDeviceGetCount": lambda: len(self.devices),
            "nvmlDeviceGetHandleByIndex": lambda index: index,
            "nvmlDeviceGetUUID": lambda handle: self.devices[handle]["uuid"],
            "nvmlDeviceGetName": lambda handle: self.devices[handle]["name"],
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetCudaComputeCapability": lambda handle: self.devices[handle]["cc"],
        }.items():
            monkeypatch.setattr(pynvml, name, function)


TWO_GPUS = [
    {"uuid": "GPU-aaaa-1111", "name": "NVIDIA GeForce RTX 3070", "total": 8192 * MIB, "free": 7604 * MIB, "cc": (8, 6)},
    {"uuid": "GPU-bbbb-2222", "name": b"Tesla T4", "total": 15360 * MIB, "free": 15000 * MIB, "cc": (7, 5)},
]


def test_nvml_readings_become_gpu_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(TWO_GPUS)
    nvml.install(monkeypatch)

    inventory = NvmlGpuProbe(visible_devices=None).read()

    assert inventory.driver_version == "560.35.03"
    assert inventory.cuda_driver_version == "12.6"
    assert [(g.index, g.name, g.total_memory_bytes, g.free_memory_bytes) for g in inventory.gpus] == [
        (0, "NVIDIA GeForce RTX 3070", 8192 * MIB, 7604 * MIB),
        (1, "Tesla T4", 15360 * MIB, 15000 * MIB),
    ]
    assert [g.supports_bf16 for g in inventory.gpus] == [True, False]
    assert nvml.shutdowns == 1


def test_nvml_probe_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(TWO_GPUS).install(monkeypatch)

    inventory = NvmlGpuProbe(visible_devices="GPU-bbbb").read()

    # CUDA renumbers the visible devices from 0.
    assert [(g.index, g.name) for g in inventory.gpus] == [(0, "Tesla T4")]


def test_nvml_driver_not_loaded_is_a_cpu_node(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(TWO_GPUS, fail_init=True).install(monkeypatch)

    assert NvmlGpuProbe().read() == GpuInventory()


def test_gpu_with_unreadable_memory_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([{**TWO_GPUS[0], "memory_error": True}, TWO_GPUS[1]]).install(monkeypatch)

    inventory = NvmlGpuProbe(visible_devices=None).read()

    assert [g.name for g in inventory.gpus] == ["Tesla T4"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("", []),
        ("1,0", [1, 0]),
        ("0,7,1", [0]),  # CUDA stops at the first device that does not exist
        ("-1", []),
        ("GPU-bbbb", [1]),
        ("MIG-1234", None),
        ("1,1", [1]),
    ],
)
def test_visible_nvml_indices(spec: str | None, expected: list[int] | None) -> None:
    assert visible_nvml_indices(spec, ["GPU-aaaa-1111", "GPU-bbbb-2222"]) == expected


@pytest.mark.parametrize(("version", "text"), [(12060, "12.6"), (13000, "13.0"), (11080, "11.8")])
def test_cuda_version_string(version: int, text: str) -> None:
    assert cuda_version_string(version) == text


def test_system_probe_reads_this_machine(tmp_path: Path) -> None:
    reading = PsutilSystemProbe(tmp_path / "not" / "created" / "yet").read()

    assert reading.ram_total_bytes >= reading.ram_available_bytes > 0
    assert reading.disk_free_bytes > 0
    assert reading.cpu_cores >= 1


def test_torch_version_comes_from_metadata_without_importing_torch() -> None:
    code = (
        "import sys, importlib.metadata as m; from modelforge_hardware.probe import torch_version; "
        "v = torch_version(); assert 'torch' not in sys.modules, 'torch imported'; "
        "assert v == m.version('torch'), v; print(v)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
