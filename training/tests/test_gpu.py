"""The worker process on an NVIDIA GPU for every task and strategy: bf16, gradient checkpointing, 4-bit NF4
on the GPU, paged optimizers and the unsloth provider (when installed). Skipped without CUDA."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from modelforge_devkit.sample_data import (
    preference_rows,
    qa_rows,
    summarization_rows,
    text_generation_rows,
    write_jsonl,
)
from modelforge_devkit.tiny_models import build_tiny_model
from modelforge_training.testing import job_spec, run_worker_process, worker_job

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]


def dataset_for(task: str, strategy: str, folder: Path) -> Path:
    if strategy in ("dpo", "rlhf"):
        return write_jsonl(preference_rows(24, seed=2), folder / "pairs.jsonl")
    if task == "summarization":
        return write_jsonl(summarization_rows(24, seed=2), folder / "summaries.jsonl")
    if task == "extractive-question-answering":
        return write_jsonl(qa_rows(24, seed=2), folder / "squad.jsonl")
    return write_jsonl(text_generation_rows(24, seed=2), folder / "chat.jsonl")


@pytest.mark.parametrize(
    ("task", "strategy", "provider", "optim", "kind"),
    [
        ("text-generation", "sft", "huggingface", "adamw_torch_fused", "causal"),
        ("text-generation", "qlora", "huggingface", "paged_adamw_8bit", "causal"),
        ("text-generation", "dpo", "huggingface", "adamw_torch", "causal"),
        ("text-generation", "rlhf", "huggingface", "adamw_torch", "causal"),
        ("summarization", "qlora", "huggingface", "adamw_torch", "seq2seq"),
        ("extractive-question-answering", "sft", "huggingface", "adamw_torch", "qa"),
        ("text-generation", "sft", "unsloth", "adamw_8bit", "causal"),
        ("text-generation", "qlora", "unsloth", "paged_adamw_32bit", "causal"),
        ("text-generation", "dpo", "unsloth", "adamw_torch", "causal"),
    ],
)
def test_worker_trains_on_the_gpu(
    task: str, strategy: str, provider: str, optim: str, kind: str, tmp_path: Path
) -> None:
    if provider == "unsloth" and importlib.util.find_spec("unsloth") is None:
        pytest.skip("unsloth is not installed")
    model = build_tiny_model(tmp_path / f"tiny-{kind}", kind)
    dataset = dataset_for(task, strategy, tmp_path)
    config = job_spec(
        task, strategy, model, dataset, provider=provider, max_steps=6, per_device_train_batch_size=2,
        max_seq_length=64, optim=optim,
    )
    run = run_worker_process(worker_job(tmp_path / "job", config), tmp_path / "job")
    assert run.returncode == 0, run.output[-4000:]
    assert run.result is not None and run.result.outcome == "completed"
    used = run.result.config
    assert used["device"].startswith("cuda:")
    assert (used["precision"], used["bf16"], used["gradient_checkpointing"]) == ("bf16", True, True)
    assert used["quantization"] == ("nf4" if strategy == "qlora" else "none")
    assert used["optim"] == optim
    assert run.result.metrics and all(math.isfinite(v) for v in run.result.metrics.values())
    assert (Path(run.result.output_dir) / "adapter_config.json").is_file()
