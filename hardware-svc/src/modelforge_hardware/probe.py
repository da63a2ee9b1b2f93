"""Reads the machine: GPUs through NVML, RAM/disk/CPU through psutil, behind small protocols so
tests feed recorded readings. A node without GPUs (or without the NVML library) is a normal answer:
an empty GPU list, never an error."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
import pynvml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    # Index as CUDA numbers the device for processes on this node (after CUDA_VISIBLE_DEVICES).
    index: int
    name: str
    total_memory_bytes: int
    free_memory_bytes: int
    # (major, minor), None when NVML could not say; bf16 needs 8.0 (Ampere) or newer.
    compute_capability: tuple[int, int] | None = None

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability is None or self.compute_capability[0] >= 8


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[GpuReading, ...] = ()
    driver_version: str = ""
    # "12.6" style, from nvmlSystemGetCudaDriverVersion (the newest CUDA the driver supports).
    cuda_driver_version: str = ""


@dataclass(frozen=True)
class SystemReading:
    ram_total_bytes: int
    ram_available_bytes: int
    disk_free_bytes: int
    cpu_cores: int


class GpuProbe(Protocol):
    def read(self) -> GpuInventory: ...


class SystemProbe(Protocol):
    def read(self) -> SystemReading: ...


def cuda_version_string(version: int) -> str:
    """NVML's integer CUDA version (12060) as "12.6"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def visible_nvml_indices(spec: str | None, uuids: Sequence[str]) -> list[int] | None:
    """NVML indices a CUDA process sees under CUDA_VISIBLE_DEVICES, in CUDA order; None = all.

    Entries are integers or GPU UUID prefixes; as in CUDA, the list stops at the first entry that
    names no device. MIG UUIDs cannot be mapped to a whole GPU here, so a MIG list shows all GPUs.
    """
    if spec is None:
        return None
    entries = [entry.strip() for entry in spec.split(",")]
    if any(entry.startswith("MIG-") for entry in entries):
        return None
    chosen: list[int] = []
    for entry in entries:
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        elif entry.startswith("GPU-") and (matches := [i for i, u in enumerate(uuids) if u.startswith(entry)]):
            index = matches[0]
        else:
            break
        if index in chosen:
            break
        chosen.append(index)
    return chosen


@dataclass
class NvmlGpuProbe:
    """Every visible NVIDIA GPU with its total and free memory. Missing library, no driver or no
    device reads as "no GPUs"."""

    visible_devices: str | None = field(default_factory=lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))

    def read(self) -> GpuInventory:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.info("no NVIDIA GPU readable (%s): reporting a CPU-only node", exc)
            return GpuInventory()
        try:
            return self._read_initialised()
        except pynvml.NVMLError as exc:
            log.warning("NVML query failed (%s): reporting a CPU-only node", exc)
            return GpuInventory()
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.debug("nvmlShutdown failed: %s", exc)

    def _read_initialised(self) -> GpuInventory:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version_string(pynvml.nvmlSystemGetCudaDriverVersion())
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(handle)) for handle in handles]
        order = visible_nvml_indices(self.visible_devices, uuids)
        nvml_indices = list(range(len(handles))) if order is None else order
        gpus = []
        for cuda_index, nvml_index in enumerate(nvml_indices):
            handle = handles[nvml_index]
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except pynvml.NVMLError as exc:
                # A GPU whose memory cannot be read (lost, or a MIG parent) cannot take a job.
                log.warning("skipping GPU %d: memory not readable (%s)", nvml_index, exc)
                continue
            try:
                capability: tuple[int, int] | None = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            except pynvml.NVMLError:
                capability = None
            gpus.append(
                GpuReading(
                    index=cuda_index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    total_memory_bytes=int(memory.total),
                    free_memory_bytes=int(memory.free),
                    compute_capability=capability,
                )
            )
        return GpuInventory(gpus=tuple(gpus), driver_version=driver, cuda_driver_version=cuda)


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass
class PsutilSystemProbe:
    """RAM, free disk of the data dir (the nearest existing parent if it is not created yet) and the
    CPU cores this process may run on (its affinity, which containers restrict)."""

    data_dir: Path

    def read(self) -> SystemReading:
        memory = psutil.virtual_memory()
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = psutil.cpu_count(logical=True) or 1
        return SystemReading(
            ram_total_bytes=int(memory.total),
            ram_available_bytes=int(memory.available),
            disk_free_bytes=int(psutil.disk_usage(str(_existing_ancestor(self.data_dir))).free),
            cpu_cores=cores,
        )


def torch_version() -> str:
    """Installed torch's version from its metadata (importing torch here would cost seconds and GBs)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ""
