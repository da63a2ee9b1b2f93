"""The GPU check's baselines: QLoRA written by hand, with nothing of ModelForge.

Run as `python -m bench.gpu_plain trl|unsloth SETTINGS_JSON RESULT_JSON`. `trl` is what a user writes
with transformers + peft + trl (NF4 with double quantisation, bf16 compute, LoRA on every linear layer,
SFTTrainer with gradient checkpointing); `unsloth` is unsloth's own recipe (FastLanguageModel,
use_gradient_checkpointing="unsloth"). Both train the same model on the same rows with the same
batch, length, rank and steps as the ModelForge jobs of bench/gpu_check.py, and write tokens/s (rows
are at least max_seq_length tokens, so every step trains batch x length tokens) and torch's peaks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def main(mode: str, settings_path: str, result_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text())
    if mode == "unsloth":
        import unsloth  # noqa: F401 - before trl / transformers / peft
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[tuple[int, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.steps.append((int(state.global_step), time.time()))

    batch, length, rank = settings["batch_size"], settings["max_seq_length"], settings["lora_r"]
    peft_config = None
    if mode == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=settings["model"], max_seq_length=length, dtype=torch.bfloat16, load_in_4bit=True,
            local_files_only=True,
        )
        model = FastLanguageModel.get_peft_model(
            model, r=rank, lora_alpha=2 * rank, lora_dropout=settings["lora_dropout"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            use_gradient_checkpointing="unsloth", max_seq_length=length,
        )
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        model = AutoModelForCausalLM.from_pretrained(
            settings["model"], dtype=torch.bfloat16, device_map={"": 0}, local_files_only=True,
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
        )
        tokenizer = AutoTokenizer.from_pretrained(settings["model"], local_files_only=True)
        peft_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=settings["lora_dropout"],
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [json.loads(line) for line in Path(settings["dataset"]).read_text().splitlines() if line.strip()]
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    times = StepTimes()
    args = SFTConfig(
        output_dir=settings["output_dir"], per_device_train_batch_size=batch, max_steps=settings["max_steps"],
        learning_rate=1e-4, bf16=True, optim="adamw_torch", max_length=length, packing=False,
        gradient_checkpointing=mode == "trl", logging_steps=1, save_strategy="no", report_to="none",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[times])
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = times.steps
    rate = (steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1]) if len(steps) > 1 else float("nan")
    Path(result_path).write_text(json.dumps({
        "steps_per_s": rate,
        "tokens_per_s": rate * batch * length,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
