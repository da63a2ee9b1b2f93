"""Measures the GPU memory peak of LoRA / QLoRA / DPO training on random-init models in public shapes,
the way hardware-svc's calibration runs were made, and appends one JSON line per run (the format of
measurements/*.jsonl, with how it was made) for docs/estimate.md's table.

On a GPU node (nothing is downloaded: random weights in the shape of a public config.json, a small
offline tokenizer from modelforge_devkit):

    python hardware-svc/scripts/measure_peak_memory.py --models qwen3-0.6b,gemma-3-1b --quant bf16,4bit
    python hardware-svc/scripts/measure_peak_memory.py --models mistral-7b-v0.3 --providers huggingface,unsloth \\
        --batch-size 2 --seq-len 2048 --out hardware-svc/measurements/h100-$(date +%F).jsonl
    python hardware-svc/scripts/measure_peak_memory.py --plan --models llama-3.1-8b   # no GPU needed

How each run is made (the calibration runs' recipe, hardware-svc/docs/estimate.md):
- the model: random-init weights in bf16 in the shape's config.json, saved to a temporary folder and
  loaded back; LoRA r on the 7 projections, alpha 2r, dropout 0 (--lora-dropout to change);
- huggingface provider: transformers + peft, 4-bit = NF4 with double quantisation and bf16 compute,
  `prepare_model_for_kbit_training` before `get_peft_model`; unsloth provider:
  `FastLanguageModel.from_pretrained(load_in_4bit=...)` then `get_peft_model(...,
  use_gradient_checkpointing="unsloth")`;
- trl `SFTTrainer` with every row exactly --seq-len random token ids (no padding or packing),
  per-device batch --batch-size, no accumulation, `adamw_torch`, bf16, --steps steps; DPO: trl
  `DPOTrainer`, prompt/chosen/rejected of seq/2 words each, `max_length` = seq, adapter-disabled reference;
- each run in its own process, so peaks and contexts never mix. The parent samples NVML's used memory
  of the device before the child starts (`nvml_base_used_gib`) and every 20 ms while it runs
  (`nvml_peak_used_gib`: what nvidia-smi shows, context and driver reserve included); the child
  reports torch's figures (`weights_alloc_gib` after loading and wrapping, `peak_alloc_gib`,
  `peak_reserved_gib`), tokens/s and the trainable parameters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelforge_hardware.calibration import MEASUREMENTS_DIR, MODEL_SHAPES, MeasuredRun

GIB = 1 << 30
NVML_INTERVAL_S = 0.02
LIBRARIES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "unsloth", "unsloth_zoo")
NO_GPU = "no CUDA device here: nothing measured (--plan lists the cases and their estimates without a GPU)\n"


@dataclass(frozen=True)
class Case:
    model: str
    provider: str  # huggingface | unsloth
    strategy: str  # sft | dpo
    quant: str  # bf16 | 4bit
    lora_r: int
    batch_size: int
    max_seq_length: int
    gradient_checkpointing: bool
    steps: int
    lora_dropout: float = 0.0

    def as_run(self, **measured: Any) -> MeasuredRun:
        return MeasuredRun.from_json({**asdict(self), "peak_reserved_gib": 0.0, **measured})


def cases_of(args: argparse.Namespace) -> list[Case]:
    return [
        Case(model, provider, strategy, quant, args.lora_r, args.batch_size, args.seq_len,
             not args.no_gradient_checkpointing or strategy == "dpo", args.steps, args.lora_dropout)
        for model in args.models.split(",")
        for provider in args.providers.split(",")
        for strategy in args.strategies.split(",")
        for quant in args.quant.split(",")
        if not (provider == "unsloth" and strategy == "dpo")  # the calibration recipe ran DPO on huggingface
    ]


def estimate_gib(case: Case) -> float:
    return case.as_run().estimate().breakdown.total_bytes / GIB


# --- the child: one training run --------------------------------------------------------------------------


def _tokenizer_folder(folder: Path) -> None:
    """A small offline tokenizer beside the weights (ids above its vocabulary are fine for random data)."""
    from modelforge_devkit.tiny_models import build_tiny_model

    tiny = build_tiny_model(folder / "tiny", "causal")
    for item in tiny.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            (folder / item.name).write_bytes(item.read_bytes())


def _load(case: Case, folder: Path) -> tuple[Any, Any]:
    import torch

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    four_bit = case.quant == "4bit"
    if case.provider == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(folder), max_seq_length=case.max_seq_length, dtype=torch.bfloat16,
            load_in_4bit=four_bit, local_files_only=True,
        )
        model = FastLanguageModel.get_peft_model(
            model, r=case.lora_r, lora_alpha=2 * case.lora_r, lora_dropout=case.lora_dropout,
            target_modules=targets, bias="none",
            use_gradient_checkpointing="unsloth" if case.gradient_checkpointing else False,
            max_seq_length=case.max_seq_length,
        )
        return model, tokenizer
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    load: dict[str, Any] = {"dtype": torch.bfloat16, "device_map": {"": 0}, "local_files_only": True}
    if four_bit:
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(str(folder), **load)
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=case.gradient_checkpointing)
    model = get_peft_model(
        model,
        LoraConfig(r=case.lora_r, lora_alpha=2 * case.lora_r, lora_dropout=case.lora_dropout,
                   target_modules=targets, task_type="CAUSAL_LM"),
    )
    return model, AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def run_case(case: Case) -> dict[str, Any]:
    """One run, in this process (a fresh child of main())."""
    if case.provider == "unsloth":
        import unsloth  # noqa: F401 - must come before trl / transformers / peft (DESIGN.md section 6)
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM

    config = MODEL_SHAPES[case.model]
    fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    with tempfile.TemporaryDirectory(prefix="mf-measure-") as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        shape = AutoConfig.for_model(config["model_type"], **fields)
        shape.architectures = config["architectures"]
        with torch.device("cuda"):
            AutoModelForCausalLM.from_config(shape, dtype=torch.bfloat16).save_pretrained(folder)
        _tokenizer_folder(folder)
        torch.cuda.empty_cache()
        model, tokenizer = _load(case, folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        torch.cuda.synchronize()
        weights_alloc = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        generator = torch.Generator().manual_seed(0)
        rows = max(case.steps * case.batch_size, 16)
        started = 0.0
        if case.strategy == "dpo":
            from trl import DPOConfig, DPOTrainer

            def words(n: int) -> str:
                return " ".join(f"w{int(i)}" for i in torch.randint(0, 300, (n,), generator=generator))

            half = case.max_seq_length // 2
            data = Dataset.from_list(
                [{"prompt": words(half), "chosen": words(half), "rejected": words(half)} for _ in range(rows)]
            )
            args = DPOConfig(
                output_dir=str(folder / "out"), per_device_train_batch_size=case.batch_size, max_steps=case.steps,
                bf16=True, optim="adamw_torch", gradient_checkpointing=True, max_length=case.max_seq_length,
                report_to="none", save_strategy="no", logging_steps=1,
            )
            trainer: Any = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        else:
            from trl import SFTConfig, SFTTrainer

            vocab = int(config["vocab_size"])
            ids = torch.randint(0, vocab, (rows, case.max_seq_length), generator=generator).tolist()
            data = Dataset.from_list([{"input_ids": row} for row in ids])
            args = SFTConfig(
                output_dir=str(folder / "out"), per_device_train_batch_size=case.batch_size, max_steps=case.steps,
                bf16=True, optim="adamw_torch", packing=False, max_length=case.max_seq_length,
                gradient_checkpointing=case.gradient_checkpointing and case.provider == "huggingface",
                report_to="none", save_strategy="no", logging_steps=1,
            )
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        started = time.perf_counter()
        trainer.train()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sequences = case.batch_size * (2 if case.strategy == "dpo" else 1)
    return {
        "weights_alloc_gib": round(weights_alloc / GIB, 3),
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
        "tokens_per_s": round(case.steps * sequences * case.max_seq_length / seconds, 1),
        "trainable_params": trainable,
        "gpu": torch.cuda.get_device_name(0),
    }


# --- the parent: NVML around each child ---------------------------------------------------------------------


class NvmlWatch:
    """The device's used memory before a run and its peak while the run's process lives (20 ms samples)."""

    def __init__(self, index: int = 0) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.base = self.used()
        self.peak = self.base
        self.driver = pynvml.nvmlSystemGetDriverVersion()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _poll(self) -> None:
        while not self._stop.wait(NVML_INTERVAL_S):
            self.peak = max(self.peak, self.used())

    def __enter__(self) -> NvmlWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def measure(case: Case, timeout_s: float, command: str) -> dict[str, Any]:
    with NvmlWatch() as watch:
        done = subprocess.run(
            [sys.executable, __file__, "--run-one", json.dumps(asdict(case))],
            capture_output=True, text=True, timeout=timeout_s,
        )
    row: dict[str, Any] = asdict(case)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        row["error"] = "out of memory" if "OutOfMemoryError" in done.stderr else " | ".join(tail)
        return row
    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    row["nvml_base_used_gib"] = round(watch.base / GIB, 3)
    row["nvml_peak_used_gib"] = round(watch.peak / GIB, 3)
    row["how"] = {
        "recipe": "hardware-svc/scripts/measure_peak_memory.py (random init in the public shape, trl, 20 ms NVML)",
        "date": dt.date.today().isoformat(), "driver": watch.driver, "libraries": versions(), "command": command,
    }
    return row


def plan(cases: list[Case]) -> str:
    lines = [
        "| model | provider | strategy | quant | r | batch x seq | ckpt | estimate GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.model} | {c.provider} | {c.strategy} | {c.quant} | {c.lora_r} | {c.batch_size} x {c.max_seq_length} "
            f"| {c.gradient_checkpointing} | {estimate_gib(c):.2f} |"
        )
    return "\n".join(lines)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="qwen3-0.6b,gemma-3-1b", help=f"comma-separated: {', '.join(MODEL_SHAPES)}")
    parser.add_argument("--providers", default="huggingface,unsloth")
    parser.add_argument("--strategies", default="sft", help="sft and/or dpo")
    parser.add_argument("--quant", default="bf16,4bit", help="bf16 and/or 4bit")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--out", type=Path, help="JSON lines to append to (default: measurements/<gpu>-<date>.jsonl)")
    parser.add_argument("--plan", action="store_true", help="list the cases and their estimates; measure nothing")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_one:
        sys.stdout.write(json.dumps(run_case(Case(**json.loads(args.run_one)))) + "\n")
        return 0
    unknown = [m for m in args.models.split(",") if m not in MODEL_SHAPES]
    if unknown:
        parser.error(f"unknown models {unknown}: choose from {', '.join(MODEL_SHAPES)}")
    cases = cases_of(args)
    if args.plan:
        sys.stdout.write(plan(cases) + "\n")
        return 0
    if not cuda_available():
        sys.stderr.write(NO_GPU)
        return 2
    out = args.out or MEASUREMENTS_DIR / f"gpu-{dt.date.today().isoformat()}.jsonl"
    command = shlex.join([Path(sys.argv[0]).name, *argv])
    failures = 0
    for case in cases:
        sys.stderr.write(f"measuring {case} (estimate {estimate_gib(case):.2f} GiB) ...\n")
        row = measure(case, args.timeout, command)
        if "error" in row:
            failures += 1
            sys.stderr.write(f"  failed: {row['error']}\n")
            continue
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        run = MeasuredRun.from_json(row)
        sys.stderr.write(f"  measured {run.measured_gib:.2f} GiB, estimate / measured {run.ratio():.3f}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
