"""Settings declared once (common.proto's SettingRule), end to end for weight_decay: trainer-svc refuses
a value out of the rule's bounds naming the field, fills the rule's default when unset, and the runtime
applies the value where every strategy's training arguments are built. A new setting is its field in
common.proto, its line in the runtime's training_arguments, and its test here."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import InvalidArgument
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.testing import FakeDatasets
from modelforge_trainer.validation import validate_request
from modelforge_training.events import PipeEventSink, StopFlag
from modelforge_training.settings import SETTINGS

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False, name="cpu")


def request(model_dir: Path, **settings: object) -> TrainingConfig:
    return TrainingConfig(task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", **settings)  # type: ignore[arg-type]


async def test_weight_decay_out_of_bounds_is_refused_naming_it(
    model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    datasets = FakeDatasets({"chat.jsonl": chat_dataset})
    with pytest.raises(InvalidArgument) as caught:
        await validate_request(
            request(model_dir, weight_decay=2.0), Hyperparameters(), data_dir=tmp_path, device=CPU, datasets=datasets
        )
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("weight_decay", "weight_decay must be >= 0 and <= 1, got 2")
    ]
    accepted = await validate_request(
        request(model_dir, weight_decay=0.1), Hyperparameters(), data_dir=tmp_path, device=CPU, datasets=datasets
    )
    assert accepted.config.weight_decay == pytest.approx(0.1)


def test_an_unset_weight_decay_takes_the_rules_default() -> None:
    spec = resolve(
        TrainingConfig(task="text-generation", model_name="org/m", dataset="d"), Hyperparameters(),
        model_name="org/m", local_model=False, dataset_path="/d",
    )
    assert SETTINGS["weight_decay"].default == 0.0
    assert spec.config.HasField("weight_decay") and spec.config.weight_decay == 0.0


def test_weight_decay_reaches_the_training_arguments(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from modelforge_training.callbacks import ProgressCallback
    from modelforge_training.runtime import Runtime
    from modelforge_training.strategies.common import StrategyContext, training_arguments

    spec = resolve(
        TrainingConfig(task="text-generation", model_name="org/m", dataset="d", weight_decay=0.05),
        Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d",
    )
    spec.checkpoint_dir = str(tmp_path / "checkpoints")
    events = PipeEventSink(None)
    runtime = Runtime(cuda=False, bf16=False, fp16=False, gradient_checkpointing=False, device="cpu")
    context = StrategyContext(spec, runtime, [], [], events, ProgressCallback(events, StopFlag()))
    arguments = training_arguments(context)
    assert arguments["weight_decay"] == pytest.approx(0.05)
    assert TrainingArguments(**arguments).weight_decay == pytest.approx(0.05)
