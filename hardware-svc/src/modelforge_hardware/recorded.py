"""Recorded machines for tests, demos and e2e runs on hosts without GPUs (MODELFORGE_FAKE_HARDWARE).

Byte counts are what NVML and psutil report on such machines: an RTX 3070 has 8192 MiB (8 GiB),
an RTX 4090 24564 MiB, an H100 80GB HBM3 81559 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelforge_hardware.probe import GpuInventory, GpuReading, SystemReading

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class RecordedMachine:
    gpus: GpuInventory
    system: SystemReading


@dataclass
class FakeGpuProbe:
    inventory: GpuInventory

    def read(self) -> GpuInventory:
        return self.inventory


@dataclass
class FakeSystemProbe:
    reading: SystemReading

    def read(self) -> SystemReading:
        return self.reading


RECORDED: dict[str, RecordedMachine] = {
    # The spec's /api/finetune/detect example: 8.0 GB GPU, 16.0 GB RAM, 250.5 GB disk, 8 cores.
    "rtx3070": RecordedMachine(
        gpus=GpuInventory(
            gpus=(GpuReading(0, "NVIDIA GeForce RTX 3070", 8192 * MIB, 7604 * MIB, (8, 6)),),
            driver_version="560.35.03",
            cuda_driver_version="12.6",
        ),
        system=SystemReading(
            ram_total_bytes=16 * GIB,
            ram_available_bytes=11 * GIB,
            disk_free_bytes=int(250.5 * GIB),
            cpu_cores=8,
        ),
    ),
    "rtx4090": RecordedMachine(
        gpus=GpuInventory(
            gpus=(GpuReading(0, "NVIDIA GeForce RTX 4090", 24564 * MIB, 24080 * MIB, (8, 9)),),
            driver_version="550.120",
            cuda_driver_version="12.4",
        ),
        system=SystemReading(
            ram_total_bytes=64 * GIB, ram_available_bytes=52 * GIB, disk_free_bytes=1200 * GIB, cpu_cores=24
        ),
    ),
    # Two H100s, the second half used by another job.
    "h100x2": RecordedMachine(
        gpus=GpuInventory(
            gpus=(
                GpuReading(0, "NVIDIA H100 80GB HBM3", 81559 * MIB, 41230 * MIB, (9, 0)),
                GpuReading(1, "NVIDIA H100 80GB HBM3", 81559 * MIB, 81004 * MIB, (9, 0)),
            ),
            driver_version="580.95.05",
            cuda_driver_version="13.0",
        ),
        system=SystemReading(
            ram_total_bytes=2015 * GIB, ram_available_bytes=1890 * GIB, disk_free_bytes=3500 * GIB, cpu_cores=96
        ),
    ),
    # A CPU-only 24 GiB machine (DESIGN section 3: an 8B QLoRA job runs, a 70B one is refused).
    "none": RecordedMachine(
        gpus=GpuInventory(),
        system=SystemReading(
            ram_total_bytes=24 * GIB, ram_available_bytes=20 * GIB, disk_free_bytes=100 * GIB, cpu_cores=4
        ),
    ),
}
