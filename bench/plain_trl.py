"""The baseline of the training benchmark: what a user writes by hand with trl, nothing of ModelForge.

Run as `python -m bench.plain_trl SETTINGS_JSON RESULT_JSON`. It trains the same model on the same rows
with the same SFTConfig values as the training runtime builds (training/: strategies/sft.py + strategies/common.py): a
seeded hold-out split, chat rows as conversational prompt/completion pairs (loss on the completion),
LoRA on every linear layer. It records wall-clock times of each phase and of every logged step.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports: spawn time is measured up to here

import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

IMPORTED = time.time()


class StepTimes(TrainerCallback):
    """Wall-clock time of every logged step (the same hook trainer-svc reports progress from)."""

    def __init__(self) -> None:
        self.train_begin = 0.0
        self.steps: list[tuple[int, float]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_begin = time.time()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.steps.append((int(state.global_step), time.time()))


def split(rows: list[dict[str, Any]], eval_split: float, seed: int) -> tuple[list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_split)))
    return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]


def conversational(row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def main(settings_path: str, result_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text())
    hp = settings["hyperparameters"]
    cuda = torch.cuda.is_available()

    qlora = bool(settings.get("qlora"))
    # As trainer-svc's huggingface provider: fp32 on the CPU; with QLoRA, 4-bit NF4 weights, bf16 compute.
    model_kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if qlora else torch.float32}
    if qlora:
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model_kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(settings["model"], local_files_only=True, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(settings["model"], local_files_only=True)
    loaded = time.time()

    with open(settings["dataset"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    train_rows, eval_rows = split(rows, hp["eval_split"], hp["seed"])
    args = SFTConfig(
        output_dir=settings["output_dir"],
        per_device_train_batch_size=hp["per_device_train_batch_size"],
        per_device_eval_batch_size=hp["per_device_train_batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        learning_rate=hp["learning_rate"],
        num_train_epochs=hp["num_train_epochs"],
        max_steps=hp["max_steps"],
        warmup_steps=hp["warmup_ratio"],
        lr_scheduler_type=hp["lr_scheduler_type"],
        optim=hp["optim"],
        logging_strategy="steps",
        logging_steps=hp["logging_steps"],
        save_strategy="steps",
        save_steps=hp["save_steps"],
        save_total_limit=2,
        eval_strategy="no",
        seed=hp["seed"],
        data_seed=hp["seed"],
        bf16=qlora,
        fp16=False,
        gradient_checkpointing=cuda,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=hp["max_seq_length"],
        completion_only_loss=True,
        packing=False,
    )
    lora = LoraConfig(
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    timer = StepTimes()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([conversational(r) for r in train_rows]),
        eval_dataset=Dataset.from_list([conversational(r) for r in eval_rows]),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    prepared = time.time()
    # The same for both sides of the comparison: mean tokens per optimizer step over the training set.
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    tokens_per_step = (
        sum(lengths) / len(lengths) * hp["per_device_train_batch_size"] * hp["gradient_accumulation_steps"]
    )
    trainer.train()
    finished = time.time()
    Path(result_path).write_text(
        json.dumps(
            {
                "started": STARTED,
                "imported": IMPORTED,
                "loaded": loaded,
                "prepared": prepared,
                "train_begin": timer.train_begin,
                "steps": timer.steps,
                "finished": finished,
                "tokens_per_step": tokens_per_step,
                "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else 0,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
