"""Measures the peak memory of a few LoRA / QLoRA training steps on random-init Llama-shaped models
and prints it next to hardware-svc's estimate (modelforge_hardware.estimator).

Run on a GPU node (nothing is downloaded; a random-init model is written to a temp folder, then
loaded the way the trainer loads a model, 4-bit through bitsandbytes for QLoRA):

    python hardware-svc/scripts/measure_peak_memory.py                     # 0.5b and 1b, qlora and lora
    python hardware-svc/scripts/measure_peak_memory.py --shapes 1b,8b --seq-len 2048 --lora-r 16
    python hardware-svc/scripts/measure_peak_memory.py --shapes tiny --modes lora --device cpu   # smoke test

"Peak" is what nvidia-smi shows for the process (DESIGN.md section 6): torch's peak reserved memory
over the training steps plus the CUDA context (NVML's per-process usage minus torch's reserved
memory, read at the same moment). On the CPU it is the process's peak RSS. Each configuration runs
in its own subprocess so peaks and contexts do not mix.

The loop mirrors the huggingface provider: bf16 autocast, LoRA on all linear layers (dropout 0.05),
peft's prepare_model_for_kbit_training for 4-bit (use --no-upcast to skip its fp32 upcast, as
unsloth does), non-reentrant gradient checkpointing, 32-bit AdamW.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelforge_hardware.estimator import TrainingJob, estimate
from modelforge_hardware.model_shape import shape_from_config

GIB = 1 << 30

# Llama-architecture shapes (config.json fields) of common sizes.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 32000, "tie_word_embeddings": False},
    # Qwen2.5-0.5B's proportions: 0.49e9 parameters, 152k vocabulary.
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    # Llama-3.2-1B: 1.24e9 parameters, 128k vocabulary.
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
}


@dataclass(frozen=True)
class Case:
    shape: str
    mode: str  # "qlora" | "lora"
    lora_r: int
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    upcast: bool
    steps: int
    device: str


@dataclass
class Measurement:
    case: Case
    parameters: int
    trainable: int
    model_allocated_bytes: int  # weights (+ adapters) after preparation
    peak_reserved_bytes: int  # torch allocator peak over the steps (CUDA); 0 on the CPU
    context_bytes: int  # CUDA context; 0 on the CPU
    peak_bytes: int  # what nvidia-smi (or the RSS on CPU) shows at peak
    seconds_per_step: float
    error: str = ""


def llama_config(shape: str) -> dict[str, Any]:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "max_position_embeddings": 8192, **SHAPES[shape]}


def estimate_for(case: Case) -> Any:
    job = TrainingJob(
        strategy="qlora" if case.mode == "qlora" else "sft",
        lora_r=case.lora_r,
        batch_size=case.batch_size,
        seq_len=case.seq_len,
        precision="bf16" if case.device == "cuda" else "fp32",
        use_4bit=case.mode == "qlora",
        gradient_checkpointing=case.gradient_checkpointing,
        upcast_non_quantized=case.upcast,
        on_gpu=case.device == "cuda",
    )
    return estimate(shape_from_config(llama_config(case.shape)), job)


def _nvml_gpu_usage() -> tuple[int, int]:
    """(this process's GPU memory as nvidia-smi lists it or 0 when it is not listed, e.g. in a PID
    namespace; the device's used memory)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == os.getpid() and process.usedGpuMemory:
                return int(process.usedGpuMemory), used
        return 0, used
    finally:
        pynvml.nvmlShutdown()


def run_case(case: Case) -> Measurement:
    """One configuration, in this process (called in a fresh subprocess)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    cuda = case.device == "cuda"
    # Device memory in use before this process creates its CUDA context.
    baseline_used = _nvml_gpu_usage()[1] if cuda else 0
    config = LlamaConfig(**SHAPES[case.shape])
    with tempfile.TemporaryDirectory(prefix="mf-measure-") as folder:
        # Random weights saved as an ordinary model folder, so loading takes the trainer's path.
        with torch.device("cuda" if cuda else "cpu"):
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        if cuda:
            torch.cuda.empty_cache()
        load: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
        if cuda:
            load["device_map"] = {"": 0}
        if case.mode == "qlora":
            load["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        model = AutoModelForCausalLM.from_pretrained(folder, **load)
    if case.mode == "qlora" and case.upcast:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if case.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(r=case.lora_r, lora_alpha=2 * case.lora_r, lora_dropout=0.05, target_modules="all-linear",
                   task_type="CAUSAL_LM"),
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    model.train()
    if cuda:
        torch.cuda.synchronize()
        model_allocated = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        model_allocated = 0
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(case.steps):
        ids = torch.randint(0, config.vocab_size, (case.batch_size, case.seq_len), generator=generator)
        ids = ids.to("cuda" if cuda else "cpu")
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / case.steps
    if cuda:
        peak_reserved = torch.cuda.max_memory_reserved()
        process_bytes, device_used = _nvml_gpu_usage()
        if not process_bytes:  # not listed: attribute the device's growth since start to this process
            process_bytes = device_used - baseline_used
        context = max(0, process_bytes - torch.cuda.memory_reserved())
        peak = peak_reserved + context
    else:
        peak_reserved = context = 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return Measurement(
        case=case,
        parameters=shape_from_config(llama_config(case.shape)).total_params,
        trainable=sum(p.numel() for p in trainable),
        model_allocated_bytes=model_allocated,
        peak_reserved_bytes=peak_reserved,
        context_bytes=context,
        peak_bytes=peak,
        seconds_per_step=seconds,
    )


def run_in_subprocess(case: Case, timeout_s: float) -> Measurement:
    command = [sys.executable, __file__, "--run-one", json.dumps(asdict(case))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Measurement(case, 0, 0, 0, 0, 0, 0, 0.0, error=f"timed out after {timeout_s:.0f} s")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        reason = "out of memory" if "OutOfMemoryError" in done.stderr else " | ".join(tail)
        return Measurement(case, 0, 0, 0, 0, 0, 0, 0.0, error=reason)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["case"] = case
    return Measurement(**data)


def table(measurements: list[Measurement]) -> str:
    header = (
        "| shape | mode | r | batch x seq | ckpt | upcast | params | trainable | measured peak GiB "
        "| (reserved + context) | estimate GiB | estimate / measured | s/step |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for m in measurements:
        c = m.case
        predicted = estimate_for(c).breakdown.total_bytes
        setup = f"| {c.shape} | {c.mode} | {c.lora_r} | {c.batch_size} x {c.seq_len} | {c.gradient_checkpointing} | "
        setup += f"{c.upcast if c.mode == 'qlora' else '-'} "
        if m.error:
            lines.append(f"{setup}| - | - | failed: {m.error} | - | {predicted / GIB:.2f} | - | - |")
            continue
        parts = f"{m.peak_reserved_bytes / GIB:.2f} + {m.context_bytes / GIB:.2f}" if c.device == "cuda" else "RSS"
        lines.append(
            f"{setup}| {m.parameters / 1e9:.2f}e9 | {m.trainable / 1e6:.1f}M | {m.peak_bytes / GIB:.2f} | {parts} "
            f"| {predicted / GIB:.2f} | {predicted / m.peak_bytes:.2f} | {m.seconds_per_step:.2f} |"
        )
    return "\n".join(lines)


def breakdowns(measurements: list[Measurement]) -> str:
    lines = ["", "Estimate breakdowns (GiB): weights, adapters, optimizer, gradients, activations, overhead"]
    for m in measurements:
        b = estimate_for(m.case).breakdown
        parts = (b.weights_bytes, b.adapters_bytes, b.optimizer_bytes, b.gradients_bytes, b.activations_bytes,
                 b.overhead_bytes)
        measured = f"; measured after load: {m.model_allocated_bytes / GIB:.2f}" if m.model_allocated_bytes else ""
        c = m.case
        lines.append(f"  {c.shape} {c.mode} r{c.lora_r} {c.batch_size}x{c.seq_len}: "
                     + ", ".join(f"{p / GIB:.2f}" for p in parts) + measured)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="0.5b,1b", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--modes", default="qlora,lora", help="qlora and/or lora")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--no-upcast", action="store_true", help="skip prepare_model_for_kbit_training's upcast")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_one:
        measurement = run_case(Case(**json.loads(args.run_one)))
        data = asdict(measurement)
        data.pop("case")
        sys.stdout.write(json.dumps(data) + "\n")
        return 0

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.stderr.write("no CUDA device: run on a GPU node, or pass --device cpu for a smoke test\n")
            return 2
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}")
    cases = [
        Case(shape, mode, args.lora_r, args.batch_size, args.seq_len, not args.no_gradient_checkpointing,
             not args.no_upcast, args.steps, args.device)
        for shape in args.shapes.split(",")
        for mode in args.modes.split(",")
        if not (mode == "qlora" and args.device == "cpu")  # bitsandbytes 4-bit training needs CUDA
    ]
    measurements = []
    for case in cases:
        sys.stderr.write(f"measuring {case.shape} {case.mode} ...\n")
        sys.stderr.flush()
        measurements.append(run_in_subprocess(case, args.timeout))
    sys.stdout.write(table(measurements) + "\n" + breakdowns(measurements) + "\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(m) for m in measurements], indent=2))
    return 0 if all(not m.error for m in measurements) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
