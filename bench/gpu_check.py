"""`make gpu-check`: ModelForge's own stack on a GPU, QLoRA with both providers on a real-shape model,
and bench/GPU.md with the estimate against nvidia-smi's peak and tokens/s against plain scripts.

    python -m bench.gpu_check [--model llama-3.2-1b] [--batch-size 4] [--seq-len 512] [--steps 30]

What it does, in one call: builds random-init weights in a public shape (hardware-svc's calibration
shapes, a small offline tokenizer), writes rows of at least --seq-len tokens, starts the whole stack
(modelforge_devkit.stack: gateway, trainer, registry, hardware, inference, NATS) on free ports, and
for each provider (huggingface; unsloth when installed):
- asks the stack for its estimate (POST /api/finetune/estimate_memory, the settings of the job);
- trains a QLoRA job through POST /api/start_training while NVML samples the device's used memory
  every 20 ms (what nvidia-smi shows: the figure the estimate targets);
- times the job's steps from its progress events.
Then it runs the same case as a plain trl script and as plain unsloth (bench/gpu_plain.py, each in its
own process, NVML around it) and writes bench/GPU.md. Without an NVIDIA GPU it says so and exits 0,
leaving GPU.md as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import bench_context, cuda_available

HERE = Path(__file__).resolve().parent
GPU_MD = HERE / "GPU.md"
GIB = 1 << 30
NVML_INTERVAL_S = 0.02
NO_GPU = "gpu-check: no NVIDIA GPU on this machine (CUDA unavailable): nothing checked, bench/GPU.md left as it is"


@dataclass
class Side:
    """One row of GPU.md."""

    name: str
    tokens_per_s: float
    peak_gib: float  # nvidia-smi's used memory at the peak (device)
    estimate_gib: float | None = None
    note: str = ""


def render(device: str, case: str, sides: list[Side], when: str, notes: list[str]) -> str:
    """GPU.md: one table, tokens/s relative to the plain trl script, estimate against the peak."""
    plain = next((s.tokens_per_s for s in sides if s.name == "plain trl script"), None)
    lines = [
        "# GPU check",
        "",
        f"`make gpu-check` on {device}, {when}. Case: {case}.",
        "",
        "Peak = the device's used memory at the peak as nvidia-smi shows it (NVML every 20 ms: tensors, "
        "allocator slack, CUDA context and the driver's reserve), the figure hardware-svc's estimate targets.",
        "",
        "| side | tokens/s | vs plain trl | peak GiB (nvidia-smi) | estimate GiB | estimate / peak |",
        "|---|---|---|---|---|---|",
    ]
    for side in sides:
        ratio = f"{side.tokens_per_s / plain:.2f}x" if plain else "-"
        estimate = f"{side.estimate_gib:.2f}" if side.estimate_gib is not None else "-"
        accuracy = f"{side.estimate_gib / side.peak_gib:.3f}" if side.estimate_gib and side.peak_gib else "-"
        name = side.name + (f" ({side.note})" if side.note else "")
        lines.append(f"| {name} | {side.tokens_per_s:.0f} | {ratio} | {side.peak_gib:.2f} | {estimate} | {accuracy} |")
    lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


class DevicePeak:
    """NVML's used memory of GPU 0, sampled every 20 ms while the block runs."""

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(NVML_INTERVAL_S):
            self.peak = max(self.peak, int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used))

    def __enter__(self) -> DevicePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()


def build_model(folder: Path, shape: str) -> Path:
    """Random-init bf16 weights in a public shape, with a small offline tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from modelforge_devkit.tiny_models import build_tiny_model
    from modelforge_hardware.calibration import MODEL_SHAPES

    config = MODEL_SHAPES[shape]
    fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    model_config = AutoConfig.for_model(config["model_type"], **fields)
    model_config.architectures = config["architectures"]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16).save_pretrained(folder)
    tiny = build_tiny_model(folder / "tokenizer-source", "causal")
    for item in tiny.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            (folder / item.name).write_bytes(item.read_bytes())
    return folder


def write_rows(path: Path, rows: int, words: int) -> Path:
    """Prompt/completion rows long enough that every one is cut at max_seq_length."""
    chooser = random.Random(0)
    vocabulary = [f"w{i}" for i in range(300)]
    with path.open("w") as handle:
        for _ in range(rows):
            text = " ".join(chooser.choice(vocabulary) for _ in range(words))
            handle.write(json.dumps({"prompt": text[: len(text) // 2], "completion": text[len(text) // 2 :]}) + "\n")
    return path


def plain_side(mode: str, settings: dict[str, Any], work: Path) -> Side:
    (work / mode).mkdir(parents=True, exist_ok=True)
    settings_path, result_path = work / mode / "settings.json", work / mode / "result.json"
    settings_path.write_text(json.dumps({**settings, "output_dir": str(work / mode / "out")}))
    with DevicePeak() as peak:
        subprocess.run([sys.executable, "-m", "bench.gpu_plain", mode, str(settings_path), str(result_path)],
                       check=True, cwd=HERE.parent)
    result = json.loads(result_path.read_text())
    return Side(f"plain {mode} script" if mode == "trl" else "plain unsloth", result["tokens_per_s"], peak.peak / GIB)


def stack_side(provider: str, context: Any, settings: dict[str, Any]) -> Side:
    from bench.watch import run_watched_job

    overrides = {
        "model_name": settings["model"], "strategy": "qlora", "provider": provider, "bf16": True,
        "per_device_train_batch_size": settings["batch_size"], "max_seq_length": settings["max_seq_length"],
        "lora_r": settings["lora_r"], "lora_alpha": 2 * settings["lora_r"], "lora_dropout": settings["lora_dropout"],
        "gradient_accumulation_steps": 1, "eval_split": 0.05,
    }
    estimate = context.http.post("/api/finetune/estimate_memory", json={
        "model_name": settings["model"], "strategy": "qlora", "provider": provider, "lora_r": settings["lora_r"],
        "per_device_train_batch_size": settings["batch_size"], "max_seq_length": settings["max_seq_length"],
        "lora_dropout": settings["lora_dropout"], "precision": "bf16", "gradient_checkpointing": True,
    })
    estimate.raise_for_status()
    with DevicePeak() as peak:
        job = asyncio.run(run_watched_job(context, settings["max_steps"], overrides=overrides, timeout_s=3600))
    if job.final_status() != "completed":
        raise RuntimeError(f"the {provider} job {job.job_id} ended {job.final_status()}")
    tokens = job.steps_per_s() * settings["batch_size"] * settings["max_seq_length"]
    return Side(f"ModelForge, {provider} provider", tokens, peak.peak / GIB, estimate.json()["total_bytes"] / GIB)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.2-1b", help="a shape of modelforge_hardware.calibration")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", type=Path, default=GPU_MD)
    args = parser.parse_args(argv)
    if not cuda_available():
        print(NO_GPU, flush=True)
        return 0

    import torch

    unsloth = importlib.util.find_spec("unsloth") is not None
    notes = [] if unsloth else ["unsloth is not installed here: its rows are missing (the trainer's `unsloth` extra)."]
    with tempfile.TemporaryDirectory(prefix="modelforge-gpu-check-") as scratch:
        work = Path(scratch)
        model = build_model(work / "model", args.model)
        rows = write_rows(work / "rows.jsonl", rows=max(64, 2 * args.steps * args.batch_size), words=2 * args.seq_len)
        settings = {"model": str(model), "dataset": str(rows), "batch_size": args.batch_size,
                    "max_seq_length": args.seq_len, "lora_r": args.lora_r, "lora_dropout": 0.0,
                    "max_steps": args.steps}
        sides: list[Side] = []
        with bench_context(work / "bench", quick=False, size="tiny") as context:
            context.dataset_path = rows
            context.upload_dataset()
            for provider in ["huggingface", *(["unsloth"] if unsloth else [])]:
                print(f"gpu-check: ModelForge job, {provider} provider ...", flush=True)
                sides.append(stack_side(provider, context, settings))
        for mode in ["trl", *(["unsloth"] if unsloth else [])]:
            print(f"gpu-check: plain {mode} ...", flush=True)
            sides.append(plain_side(mode, settings, work))
    case = (f"random-init {args.model} shape, QLoRA (NF4, bf16 compute) r={args.lora_r}, batch {args.batch_size} x "
            f"{args.seq_len} tokens, {args.steps} steps, gradient checkpointing")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(torch.cuda.get_device_name(0), case, sides, when, notes)
    args.output.write_text(text)
    print(text + f"gpu-check: wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
