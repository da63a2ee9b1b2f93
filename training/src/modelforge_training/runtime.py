"""The device a worker trains on and the precision that follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modelforge_training.spec import TrainingConfig


@dataclass(frozen=True)
class Runtime:
    cuda: bool
    bf16: bool  # bf16 mixed precision (only where the GPU supports it)
    fp16: bool  # fp16 mixed precision (GPUs without bf16)
    gradient_checkpointing: bool
    device: str

    @property
    def dtype(self) -> torch.dtype:
        if self.bf16:
            return torch.bfloat16
        if self.fp16:
            return torch.float16
        return torch.float32

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def details(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": self.precision,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


def detect_runtime(config: TrainingConfig) -> Runtime:
    """CPU trains in fp32. A GPU asked for bf16 uses it where supported and fp16 mixed precision where
    not (the closest it has); bf16=false trains in fp32."""
    # Memory is what limits GPU jobs, so checkpointing is on there unless asked off; on the CPU it
    # only costs time, so it is off unless asked for.
    asked = config.gradient_checkpointing if config.HasField("gradient_checkpointing") else None
    if not torch.cuda.is_available():
        return Runtime(cuda=False, bf16=False, fp16=False, gradient_checkpointing=bool(asked), device="cpu")
    supported = torch.cuda.is_bf16_supported(including_emulation=False)
    return Runtime(
        cuda=True,
        bf16=config.bf16 and supported,
        fp16=config.bf16 and not supported,
        gradient_checkpointing=asked is None or asked,
        device=f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})",
    )
