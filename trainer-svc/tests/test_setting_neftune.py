"""neftune_noise_alpha, added as a setting is meant to be added (docs/architecture.md): its field and rule
in common.proto, its line in the runtime's training_arguments, and this test. The gateway's request
model, trainer-svc's bounds check and the job spec take it from the rule with no edit of their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import InvalidArgument
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.testing import FakeDatasets
from modelforge_trainer.validation import validate_request
from modelforge_training.events import PipeEventSink, StopFlag
from modelforge_training.spec import parse_spec

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False, name="cpu")


def config(model_name: str, **settings: float) -> TrainingConfig:
    return TrainingConfig(task="text-generation", model_name=model_name, dataset="chat.jsonl", **settings)


@pytest.mark.parametrize(("value", "message"), [
    (0.0, "neftune_noise_alpha must be > 0 and <= 100, got 0"),
    (250.0, "neftune_noise_alpha must be > 0 and <= 100, got 250"),
])
async def test_a_noise_out_of_bounds_is_refused_naming_it(
    model_dir: Path, chat_dataset: Path, tmp_path: Path, value: float, message: str
) -> None:
    datasets = FakeDatasets({"chat.jsonl": chat_dataset})
    with pytest.raises(InvalidArgument) as caught:
        await validate_request(
            config(str(model_dir), neftune_noise_alpha=value), Hyperparameters(),
            data_dir=tmp_path, device=CPU, datasets=datasets,
        )
    assert [(v.field, v.description) for v in caught.value.violations] == [("neftune_noise_alpha", message)]


def arguments_for(tmp_path: Path, request: TrainingConfig) -> dict[str, object]:
    from modelforge_training.callbacks import ProgressCallback
    from modelforge_training.runtime import Runtime
    from modelforge_training.strategies.common import StrategyContext, training_arguments

    spec = resolve(request, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d")
    spec.job_id, spec.checkpoint_dir = "job-1", str(tmp_path / "checkpoints")
    spec.output_dir, spec.result_path = str(tmp_path / "out"), str(tmp_path / "result.json")
    # The spec as the runtime reads it back from job.json (unknown fields refused, rules checked).
    read = parse_spec(json_format.MessageToJson(spec))
    events = PipeEventSink(None)
    runtime = Runtime(cuda=False, bf16=False, fp16=False, gradient_checkpointing=False, device="cpu")
    return training_arguments(StrategyContext(read, runtime, [], [], events, ProgressCallback(events, StopFlag())))


def test_the_noise_reaches_the_trainer_and_is_off_when_unset(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    asked = arguments_for(tmp_path, config("org/m", neftune_noise_alpha=5.0))
    assert TrainingArguments(**asked).neftune_noise_alpha == pytest.approx(5.0)
    unset = arguments_for(tmp_path, config("org/m"))
    assert unset["neftune_noise_alpha"] is None
    assert TrainingArguments(**unset).neftune_noise_alpha is None
