"""(GPU only) QLoRA tokens/s and peak GPU memory on a 1B-class random-init Llama: a plain trl script vs
ModelForge jobs with the huggingface provider and with the unsloth provider.

Without CUDA it measures nothing and says so; the table then cites the earlier H100 measurement
recorded in the design notes (/work/shared/DESIGN.md section 6), labelled as such. Peak memory of a
ModelForge job is the largest GPU memory nvidia-smi reports for its worker process (allocator plus
CUDA context); the plain script reports torch's peak reserved memory, which leaves the context out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from bench.common import BenchContext, Goal, Section, Table, cuda_available, median
from bench.training import plain_steps_per_s, run_plain
from bench.watch import run_watched_job

ONE_B_LLAMA = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
}
EARLIER = (
    "Not measured here (no CUDA device on this machine). Earlier measurement, recorded in the design notes "
    "(DESIGN.md section 6, an H100 80GB lent on 2026-11-23; torch 2.11.0 CUDA 13.0, transformers 5.17.0, "
    "trl 1.15.0, peft 0.21.0, bitsandbytes 0.50.2, unsloth 2026.10.9): on random-init Llama-3.1-8B shapes, "
    "QLoRA r=16, batch 2, sequence 2048, gradient checkpointing, the unsloth provider ran 1.9x the tokens/s of "
    "the huggingface provider with about 40% less peak memory; on 1B-class shapes the speed gap was about 1.5x. "
    "No plain-trl figure was recorded then."
)


class GpuMemoryWatch:
    """Polls nvidia-smi for the largest memory used by any process other than the ones already there."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._ignore = set(self._usage())

    def _usage(self) -> dict[int, int]:
        done = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
        )
        usage = {}
        for line in done.stdout.splitlines():
            pid, _, used = line.partition(",")
            if pid.strip().isdigit() and used.strip().isdigit():
                usage[int(pid)] = int(used)
        return usage

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            for pid, used in self._usage().items():
                if pid not in self._ignore:
                    self.peak_mib = max(self.peak_mib, used)

    def __enter__(self) -> GpuMemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_one_b_model(context: BenchContext) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = context.work_dir / "models" / "llama-1b-class"
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(context.model_dir, local_files_only=True)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **ONE_B_LLAMA,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(context: BenchContext) -> Section:
    section = Section(
        key="gpu_qlora",
        title="GPU: QLoRA, huggingface vs unsloth provider vs plain trl",
        method="1B-class random-init Llama (hidden 2048, 16 layers), QLoRA (NF4, bf16 compute), LoRA r=8, "
        "same rows and settings as the training benchmark.",
    )
    if not cuda_available() or shutil.which("nvidia-smi") is None:
        section.goals.append(Goal("QLoRA tokens/s and peak memory table", "measured with a GPU", "no GPU", None))
        section.notes.append(EARLIER)
        return section

    model_dir = build_one_b_model(context)
    max_steps = 5 if context.quick else 30
    rounds = 1 if context.quick else 3
    sides = ["plain trl script", "ModelForge, huggingface provider"]
    if importlib.util.find_spec("unsloth") is not None:
        sides.append("ModelForge, unsloth provider")
    else:
        section.notes.append("unsloth is not installed: the unsloth row is missing (pip install the `unsloth` extra).")
    rates: dict[str, list[float]] = {side: [] for side in sides}
    peaks: dict[str, list[float]] = {side: [] for side in sides}
    tokens_per_step = 0.0
    for index in range(rounds):
        for side in sides:
            if side == "plain trl script":
                result = run_plain(context, max_steps, f"qlora-{index}", model_dir=model_dir, qlora=True)
                tokens_per_step = float(result["tokens_per_step"])
                rates[side].append(plain_steps_per_s(result))
                peaks[side].append(result["peak_reserved_bytes"] / 2**30)
                continue
            provider = "unsloth" if "unsloth" in side else "huggingface"
            overrides: dict[str, Any] = {
                "model_name": str(model_dir),
                "strategy": "qlora",
                "provider": provider,
                "bf16": True,
            }
            with GpuMemoryWatch() as watch:
                job = asyncio.run(run_watched_job(context, max_steps, overrides=overrides))
            if job.final_status() != "completed":
                raise RuntimeError(f"{side}: job {job.job_id} ended {job.final_status()}")
            rates[side].append(job.steps_per_s())
            peaks[side].append(watch.peak_mib / 1024)
    import torch

    device = torch.cuda.get_device_name(0)
    table = Table(
        f"QLoRA on {device} (median of {rounds} rounds)",
        ["side", "steps/s", "tokens/s", "peak GPU memory GiB", "tokens/s vs plain trl"],
    )
    plain_rate = median(rates["plain trl script"])
    for side in sides:
        rate = median(rates[side])
        table.add(side, rate, rate * tokens_per_step, median(peaks[side]), rate / plain_rate if plain_rate else None)
    section.tables.append(table)
    section.notes.append(
        "Peak memory: plain = torch max_memory_reserved (no CUDA context); ModelForge = nvidia-smi "
        "per-process peak (includes the context, about 0.5 to 1.2 GiB)."
    )
    return section
