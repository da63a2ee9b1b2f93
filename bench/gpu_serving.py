"""(GPU only) Serving many users on a GPU (issue 17): the serving benchmark (bench/serving.py) with
inference-svc's LocalBackend on CUDA, in this process and through the stack, on random-init weights in a
real model's shape (Qwen2.5-0.5B: 24 layers, hidden 896, a 151,936-token head) with the bench's tokenizer.

Why a GPU section: on the 2-core CPU machine a prefill's cost grows with its rows (eight users' prompts
cost about 2x one user's in one forward pass: bench/ANALYSIS.md, Serving), so the first-token goal (8
users' p99 <= 2x one user's) sits at that machine's floor. On a GPU a forward pass of eight rows costs about
what one row costs; this section judges the goal there. Without CUDA it measures nothing and says so.

    python -m bench.gpu_serving    # what `make gpu-check` runs: writes bench/GPU-serving.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import serving
from bench.common import BenchContext, Goal, Section, cuda_available

GPU_SERVING_MD = Path(__file__).resolve().parent / "GPU-serving.md"
NO_GPU = ("gpu-serving: no NVIDIA GPU on this machine (CUDA unavailable): nothing measured, bench/GPU-serving.md "
          "left as it is")
SHAPE = "qwen2.5-0.5b"
# Long enough for tokens/s to be decoding's, short enough that the whole section fits a few minutes of a
# lent GPU (the CPU section's 128 tokens would take 4x as long).
MAX_NEW_TOKENS = 32
TITLE = "Serving many users on a GPU: continuous batching over adapters of one base"


def build_model(out: Path, tokenizer_dir: Path) -> Path:
    """Random-init weights in SHAPE (the dtype inference-svc serves on CUDA), with the bench's tokenizer
    and its chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from modelforge_hardware.calibration import MODEL_SHAPES
    from modelforge_inference.backends.hf_models import serving_dtype

    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    shape = MODEL_SHAPES[SHAPE]
    config = AutoConfig.for_model(
        shape["model_type"],
        **{k: v for k, v in shape.items() if k not in ("architectures", "model_type")},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = shape["architectures"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=serving_dtype("cuda"))
    # The head keeps the shape's width (151,936 rows: its product is part of every step's cost), but only
    # the tokenizer's ids can win a greedy pick: the other rows are zero, so they score 0, while the best of
    # the tokenizer's few hundred random scores is above 0. Otherwise nearly every token would be one the
    # tokenizer cannot write, and no user would ever see a first piece of text.
    with torch.no_grad():
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            matrix[len(tokenizer):] = 0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def not_measured() -> Section:
    section = Section(key="gpu_serving", title=TITLE, method=(__doc__ or "").split("\n\n")[0].replace("\n", " "))
    section.goals.append(Goal("time to first token p99, 8 users vs one at a time, on a GPU (in process and "
                              "through the stack)", f"<= {serving.TTFT_GOAL:g}x", "no GPU", None))
    section.notes.append(
        "Not measured here: no CUDA device on this machine. `make gpu-check` runs this section on a machine "
        "with one (python -m bench.gpu_serving, which writes bench/GPU-serving.md)."
    )
    return section


def run(context: BenchContext) -> Section:
    if not cuda_available():
        return not_measured()
    work = context.work_dir / "gpu-serving"
    base = build_model(context.work_dir / "models" / f"{SHAPE}-random", context.model_dir)
    return serving.measure(base, work, context.quick, stack=context.stack, device="cuda",
                           max_new_tokens=8 if context.quick else MAX_NEW_TOKENS, key="gpu_serving", title=TITLE)


def main(argv: list[str]) -> int:
    """This section alone into GPU_SERVING_MD (other `python -m bench` options pass through); without CUDA
    it says so and exits 0 before starting anything."""
    if not cuda_available():
        print(NO_GPU, flush=True)
        return 0
    from bench.__main__ import main as bench_main

    return bench_main(["--only", "gpu_serving", "--output", str(GPU_SERVING_MD), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
