"""A separate evaluation dataset (TrainingConfig.eval_dataset, the OpenAI API's validation_file):
checked like the dataset, under its own field name, and used instead of a held-out share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import InvalidArgument
from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_trainer.config import Hyperparameters
from modelforge_trainer.convert import resolved_to_pb
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.testing import FakeDatasets
from modelforge_trainer.validation import validate_request
from modelforge_training.testing import run_worker_inline, worker_job

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False)


def request(model: Path, **overrides: object) -> TrainingConfig:
    fields: dict[str, object] = {"task": "text-generation", "model_name": str(model), "dataset": "chat.jsonl"}
    return TrainingConfig(**(fields | overrides))  # type: ignore[arg-type]


async def test_the_eval_dataset_is_resolved_and_round_trips(
    model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    evaluation = write_jsonl(text_generation_rows(12, seed=9), tmp_path / "eval.jsonl")
    datasets = FakeDatasets({"chat.jsonl": chat_dataset, "eval.jsonl": evaluation})
    config = await validate_request(
        request(model_dir, eval_dataset="eval.jsonl"), Hyperparameters(), data_dir=tmp_path, device=CPU,
        datasets=datasets,
    )
    assert (config.config.eval_dataset, config.eval_dataset_path) == ("eval.jsonl", str(evaluation))
    message = resolved_to_pb(config)
    assert message.eval_dataset == "eval.jsonl"
    plain = await validate_request(
        request(model_dir), Hyperparameters(), data_dir=tmp_path, device=CPU, datasets=datasets
    )
    assert (plain.config.eval_dataset, plain.eval_dataset_path) == ("", "")
    assert not resolved_to_pb(plain).HasField("eval_dataset")


async def test_a_bad_eval_dataset_is_named_as_such(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    rows = [json.dumps(r) for r in text_generation_rows(12, seed=2)]
    rows[3] = '{"messages": "nope"}'
    broken.write_text("\n".join(rows) + "\n")
    datasets = FakeDatasets({"chat.jsonl": chat_dataset, "broken.jsonl": broken})
    for name, field in (("missing.jsonl", "eval_dataset"), ("broken.jsonl", "eval_dataset/line 4/messages")):
        with pytest.raises(InvalidArgument) as caught:
            await validate_request(
                request(model_dir, eval_dataset=name), Hyperparameters(), data_dir=tmp_path, device=CPU,
                datasets=datasets,
            )
        assert [v.field for v in caught.value.violations] == [field]


@pytest.mark.slow
async def test_training_evaluates_on_the_eval_dataset(
    tiny_causal_model: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    evaluation = write_jsonl(text_generation_rows(13, seed=9), tmp_path / "eval.jsonl")
    datasets = FakeDatasets({"chat.jsonl": chat_dataset, "eval.jsonl": evaluation})
    settings = {
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 64,
        "num_train_epochs": 1.0,
    }
    config = await validate_request(
        request(tiny_causal_model, eval_dataset="eval.jsonl", **settings), Hyperparameters(), data_dir=tmp_path,
        device=CPU, datasets=datasets,
    )
    run = run_worker_inline(worker_job(tmp_path / "job", config), tmp_path / "job")
    assert run.result is not None and run.result.outcome == "completed"
    # All 20 dataset rows trained on (5 steps of 4), all 13 evaluation rows evaluated.
    assert run.result.step == 5
    assert (run.result.config["train_examples"], run.result.config["eval_examples"]) == (20, 13)
