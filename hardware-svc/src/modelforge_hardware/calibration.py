"""Measured GPU peaks and the estimate beside them.

A measured run is one JSON object a line (hardware-svc/measurements/*.jsonl, the format of
scripts/measure_peak_memory.py's output): the public shape it used (`model`, a key of MODEL_SHAPES),
its settings and what NVML and torch reported. What the estimate is held against is nvidia-smi's used
memory at the peak (`nvml_peak_used_gib`: what an out-of-memory is decided by, including the CUDA
context and what the driver holds on the idle card); a run without an NVML figure is held against
torch's peak reserved plus the context and reserve the other runs measured (docs/estimate.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge_hardware.estimator import (
    CUDA_CONTEXT_BYTES,
    GIB,
    GPU_DRIVER_RESERVE_BYTES,
    UNSLOTH_RUNTIME_BYTES,
    MemoryEstimate,
    TrainingJob,
    estimate,
)
from modelforge_hardware.model_shape import shape_from_config

MEASUREMENTS_DIR = Path(__file__).resolve().parents[2] / "measurements"
# Within this share of the measured peak, and never under it by more (issue 16's bar).
TOLERANCE = 0.10

# config.json fields of public model shapes (random-init weights in these shapes are what is measured).
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "tie_word_embeddings": True, "hidden_act": "silu", "max_position_embeddings": 32768,
    },
    "llama-3.2-1b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True, "hidden_act": "silu",
        "max_position_embeddings": 131072,
    },
    "llama-3.2-3b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
        "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": True, "hidden_act": "silu",
        "max_position_embeddings": 131072,
    },
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False, "hidden_act": "silu",
        "max_position_embeddings": 131072,
    },
    "qwen3-0.6b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "tie_word_embeddings": True, "hidden_act": "silu", "max_position_embeddings": 40960,
    },
    "qwen3-4b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "tie_word_embeddings": True, "hidden_act": "silu", "max_position_embeddings": 40960,
    },
    "gemma-3-1b": {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152,
        "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 256, "vocab_size": 262144, "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "sliding_window": 512,
    },
    "mistral-7b-v0.3": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 32768, "tie_word_embeddings": False, "hidden_act": "silu",
        "max_position_embeddings": 32768,
    },
}


@dataclass(frozen=True)
class MeasuredRun:
    model: str
    provider: str
    strategy: str
    quant: str
    lora_r: int
    batch_size: int
    max_seq_length: int
    gradient_checkpointing: bool
    peak_reserved_gib: float
    nvml_peak_used_gib: float | None = None
    peak_alloc_gib: float | None = None
    weights_alloc_gib: float | None = None
    lora_dropout: float = 0.0
    source: str = ""

    @classmethod
    def from_json(cls, row: dict[str, Any], source: str = "") -> MeasuredRun:
        return cls(
            model=str(row["model"]),
            provider=str(row["provider"]),
            strategy=str(row["strategy"]),
            quant=str(row["quant"]),
            lora_r=int(row["lora_r"]),
            batch_size=int(row["batch_size"]),
            max_seq_length=int(row["max_seq_length"]),
            gradient_checkpointing=bool(row["gradient_checkpointing"]),
            peak_reserved_gib=float(row["peak_reserved_gib"]),
            nvml_peak_used_gib=float(row["nvml_peak_used_gib"]) if row.get("nvml_peak_used_gib") else None,
            peak_alloc_gib=float(row["peak_alloc_gib"]) if row.get("peak_alloc_gib") else None,
            weights_alloc_gib=float(row["weights_alloc_gib"]) if row.get("weights_alloc_gib") else None,
            lora_dropout=float(row.get("lora_dropout", 0.0)),
            source=source,
        )

    @property
    def measured_gib(self) -> float:
        """nvidia-smi's used memory at the peak; without NVML, reserved + context + the card's reserve."""
        if self.nvml_peak_used_gib is not None:
            return self.nvml_peak_used_gib
        context = CUDA_CONTEXT_BYTES + GPU_DRIVER_RESERVE_BYTES
        if self.provider == "unsloth":
            context += UNSLOTH_RUNTIME_BYTES
        return self.peak_reserved_gib + context / GIB

    @property
    def label(self) -> str:
        ckpt = "ckpt" if self.gradient_checkpointing else "no ckpt"
        return (
            f"{self.model} {self.provider} {self.strategy} {self.quant} r{self.lora_r} "
            f"b{self.batch_size} x {self.max_seq_length} {ckpt}"
        )

    def job(self) -> TrainingJob:
        return TrainingJob(
            strategy=self.strategy,
            lora_r=self.lora_r,
            batch_size=self.batch_size,
            seq_len=self.max_seq_length,
            precision="bf16",
            use_4bit=self.quant == "4bit",
            gradient_checkpointing=self.gradient_checkpointing,
            provider=self.provider,
            lora_dropout=self.lora_dropout,
        )

    def estimate(self) -> MemoryEstimate:
        return estimate(shape_from_config(MODEL_SHAPES[self.model]), self.job())

    def ratio(self) -> float:
        return self.estimate().breakdown.total_bytes / GIB / self.measured_gib


def load_runs(paths: Iterable[Path] | None = None) -> list[MeasuredRun]:
    """Every measured run in the given files (default: every measurements/*.jsonl)."""
    files = sorted(MEASUREMENTS_DIR.glob("*.jsonl")) if paths is None else list(paths)
    runs = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                runs.append(MeasuredRun.from_json(json.loads(line), source=f"{path.name}:{number}"))
    return runs


def markdown_table(runs: Iterable[MeasuredRun]) -> str:
    """Estimate vs measured, a row per run, with the estimate's largest parts."""
    lines = [
        "| run | measured GiB | estimate GiB | estimate / measured | largest parts (GiB) | source |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        result = run.estimate().breakdown
        total = result.total_bytes / GIB
        measured = f"{run.measured_gib:.3f}" + ("" if run.nvml_peak_used_gib is not None else " (reserved + context)")
        parts = ", ".join(f"{p.name} {p.bytes / GIB:.2f}" for p in result.largest(3))
        lines.append(
            f"| {run.label} | {measured} | {total:.3f} | {total / run.measured_gib:.3f} | {parts} | {run.source} |"
        )
    return "\n".join(lines)
