"""Every implemented (task, strategy) trains for real on a tiny model, in this process (run_job, what the
worker process runs), so the suite imports torch and trl once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from modelforge_devkit.sample_data import preference_rows, qa_rows, summarization_rows, write_jsonl
from modelforge_devkit.tiny_models import build_tiny_model
from modelforge_training.events import StopFlag
from modelforge_training.protocol import MetricMessage, Progress
from modelforge_training.spec import TrainingJobSpec
from modelforge_training.testing import WorkerRun, job_spec, run_worker_inline, worker_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_seq2seq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny").resolve() / "tiny-t5", "seq2seq")


@pytest.fixture(scope="module")
def tiny_qa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny").resolve() / "tiny-bert", "qa")


def job_config(task: str, strategy: str, model: Path, dataset: Path, **fields: Any) -> TrainingJobSpec:
    settings: dict[str, Any] = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 64,
        "max_steps": 4,
        **fields,
    }
    return job_spec(task, strategy, model, dataset, **{"bf16": False, **settings})


def train(config: TrainingJobSpec, job_dir: Path, **options: Any) -> WorkerRun:
    run = run_worker_inline(worker_job(job_dir, config, **options), job_dir)
    assert run.result is not None
    return run


def final_metrics(run: WorkerRun) -> dict[str, float]:
    (metrics,) = [m.metrics for m in run.messages if isinstance(m, MetricMessage)]
    assert metrics == run.result.metrics
    assert all(math.isfinite(v) for v in metrics.values())
    return metrics


def first_loss(run: WorkerRun) -> float:
    return next(m.loss for m in run.messages if isinstance(m, Progress) and m.loss is not None)


def steps(run: WorkerRun) -> list[int]:
    return [m.step for m in run.messages if isinstance(m, Progress)]


def test_qlora_trains_a_4bit_base_on_the_cpu(tiny_causal_model: Path, chat_dataset: Path, tmp_path: Path) -> None:
    run = train(job_config("text-generation", "qlora", tiny_causal_model, chat_dataset), tmp_path)
    assert run.result.outcome == "completed"
    assert (run.result.config["quantization"], run.result.config["use_4bit"]) == ("nf4", True)
    assert set(final_metrics(run)) == {"final_loss", "eval_loss", "perplexity", "trained_tokens"}
    assert final_metrics(run)["trained_tokens"] > 0
    assert steps(run) == [0, 1, 2, 3, 4]


def test_dpo_learns_from_preference_pairs(tiny_causal_model: Path, tmp_path: Path) -> None:
    dataset = write_jsonl(preference_rows(20, seed=4), tmp_path / "pairs.jsonl")
    config = job_config("text-generation", "dpo", tiny_causal_model, dataset, dpo_beta=0.25)
    run = train(config, tmp_path / "job")
    metrics = final_metrics(run)
    assert {"final_loss", "eval_loss", "reward_accuracy", "reward_margin", "trained_tokens"} <= set(metrics)
    assert (run.result.config["reference"], run.result.config["dpo_beta"]) == ("adapter off", 0.25)
    assert (Path(run.result.output_dir) / "adapter_config.json").is_file()


def test_rlhf_trains_a_reward_model_then_the_policy(tiny_causal_model: Path, tmp_path: Path) -> None:
    dataset = write_jsonl(preference_rows(20, seed=8), tmp_path / "pairs.jsonl")
    run = train(job_config("text-generation", "rlhf", tiny_causal_model, dataset), tmp_path / "job")
    metrics = final_metrics(run)
    assert {"final_loss", "reward_model_eval_loss", "reward_model_accuracy", "eval_reward"} <= set(metrics)
    assert (run.result.config["rl_algorithm"], run.result.config["num_generations"]) == ("grpo", 2)
    progress = [m for m in run.messages if isinstance(m, Progress)]
    assert progress[-1].progress == 100.0
    assert [m.progress for m in progress if m.step == 4] == [50.0, 100.0]  # two phases, half each
    output = Path(run.result.output_dir)
    assert (output / "adapter_config.json").is_file() and (output / "reward_model" / "adapter_config.json").is_file()


def test_summarization_with_an_encoder_decoder_model(tiny_seq2seq_model: Path, tmp_path: Path) -> None:
    dataset = write_jsonl(summarization_rows(20, seed=5), tmp_path / "summaries.jsonl")
    config = job_config(
        "summarization",
        "sft",
        tiny_seq2seq_model,
        dataset,
        max_steps=60,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
    )
    run = train(config, tmp_path / "job")
    metrics = final_metrics(run)
    assert {"final_loss", "eval_loss", "perplexity", "rouge1", "rouge2", "rougeL"} <= set(metrics)
    assert run.result.config["architecture"] == "encoder-decoder"
    assert metrics["final_loss"] < first_loss(run) / 2  # it learns the short one-sentence summaries


def test_summarization_with_a_causal_model(tiny_causal_model: Path, tmp_path: Path) -> None:
    dataset = write_jsonl(summarization_rows(20, seed=6), tmp_path / "summaries.jsonl")
    run = train(job_config("summarization", "sft", tiny_causal_model, dataset, max_seq_length=128), tmp_path / "job")
    assert run.result.config["architecture"] == "causal"
    assert {"rouge1", "rouge2", "rougeL", "perplexity"} <= set(final_metrics(run))


def test_extractive_qa_learns_spans(tiny_qa_model: Path, tmp_path: Path) -> None:
    dataset = write_jsonl(qa_rows(20, seed=7), tmp_path / "squad.jsonl")
    config = job_config(
        "extractive-question-answering",
        "sft",
        tiny_qa_model,
        dataset,
        max_steps=100,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
    )
    run = train(config, tmp_path / "job")
    metrics = final_metrics(run)
    assert set(metrics) == {"final_loss", "eval_loss", "exact_match", "f1"}
    # The answer is always the place word of the second sentence: it learns to find it.
    assert metrics["final_loss"] < first_loss(run) / 2
    assert metrics["f1"] > 0.0
    assert run.result.config["trained_head"] == "qa_outputs"


class StopAfterChecks(StopFlag):
    """Reads as set from the (n+1)th check on: run_job checks once before training, the progress callback
    once per step, so n=3 stops after step 3."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.remaining = n

    def is_set(self) -> bool:
        self.remaining -= 1
        return self.remaining < 0


def test_a_stopped_job_saves_a_checkpoint_that_a_new_job_resumes(
    tiny_causal_model: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    config = job_config("text-generation", "sft", tiny_causal_model, chat_dataset, max_steps=6)
    stopped = run_worker_inline(worker_job(tmp_path / "a", config), tmp_path / "a", stop=StopAfterChecks(3))
    assert stopped.result is not None and stopped.result.outcome == "stopped"
    assert stopped.result.step == 3 and stopped.result.checkpoint.endswith("checkpoint-3")
    assert steps(stopped)[-1] == 3

    resumed = train(config, tmp_path / "b", resume_checkpoint=stopped.result.checkpoint)
    assert resumed.result.outcome == "completed"
    assert steps(resumed) == [3, 4, 5, 6]  # continues where the first job stopped


def test_gradient_checkpointing_asked_for_on_the_cpu_trains(
    tiny_causal_model: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    config = job_config("text-generation", "sft", tiny_causal_model, chat_dataset, gradient_checkpointing=True)
    run = train(config, tmp_path / "job")
    assert math.isfinite(final_metrics(run)["final_loss"])
    assert run.result.config["gradient_checkpointing"] is True
    # LoRA's B matrices start at zero: non-zero ones show gradients flowed through the recomputed layers.
    from safetensors.torch import load_file

    weights = load_file(str(Path(run.result.output_dir) / "adapter_model.safetensors"))
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
