"""What the trainer's node can run: an NVIDIA GPU, bf16, unsloth. Read once at startup through NVML, so
the service process neither imports torch nor creates a CUDA context (GPU memory is the workers')."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

BF16_MIN_COMPUTE_CAPABILITY = 8  # Ampere and newer


@dataclass(frozen=True)
class DeviceInfo:
    cuda: bool = False
    bf16: bool = False
    unsloth_installed: bool = False
    name: str = "cpu"
    gpu_count: int = 0


def detect_device() -> DeviceInfo:
    unsloth = importlib.util.find_spec("unsloth") is not None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            gpu_count = pynvml.nvmlDeviceGetCount()
            if gpu_count == 0:
                return DeviceInfo(unsloth_installed=unsloth)
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            major, _minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - no driver, no library: a CPU node
        log.info("no NVIDIA GPU found (%s); jobs train on the CPU", exc)
        return DeviceInfo(unsloth_installed=unsloth)
    return DeviceInfo(
        cuda=True,
        bf16=major >= BF16_MIN_COMPUTE_CAPABILITY,
        unsloth_installed=unsloth,
        name=name.decode() if isinstance(name, bytes) else str(name),
        gpu_count=gpu_count,
    )
