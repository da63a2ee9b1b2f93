"""Hardware -> the providers /api/info lists."""

from __future__ import annotations

from modelforge.v1 import hardware_pb2
from modelforge_common.catalog import PROVIDERS, STRATEGIES, TASKS
from modelforge_gateway.system.models import InfoResponse

# Providers that need a CUDA GPU to train (unsloth's kernels are CUDA-only).
CUDA_ONLY_PROVIDERS = frozenset({"unsloth"})


def info(hardware: hardware_pb2.HardwareInfo | None) -> InfoResponse:
    """unsloth only with a CUDA GPU; without an answer (None) only the providers that run everywhere."""
    has_cuda = hardware is not None and hardware.device_type == "cuda" and len(hardware.gpus) > 0
    providers = [p for p in PROVIDERS if has_cuda or p not in CUDA_ONLY_PROVIDERS]
    return InfoResponse(providers=providers, strategies=list(STRATEGIES), tasks=list(TASKS))
