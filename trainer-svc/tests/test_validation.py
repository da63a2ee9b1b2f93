from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import InvalidArgument, Unavailable
from modelforge_devkit.sample_data import preference_rows, write_jsonl
from modelforge_trainer.config import Hyperparameters
from modelforge_trainer.device import DeviceInfo, detect_device
from modelforge_trainer.ports import MemoryEstimate
from modelforge_trainer.testing import FakeDatasets, FakeEstimator
from modelforge_trainer.validation import validate_request
from modelforge_training.strategies import implemented_providers

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False)
GPU = DeviceInfo(cuda=True, bf16=True, unsloth_installed=True, name="test-gpu")


def request(model_dir: Path, **overrides: object) -> TrainingConfig:
    fields: dict[str, object] = {"task": "text-generation", "model_name": str(model_dir), "dataset": "chat.jsonl"}
    fields.update(overrides)
    return TrainingConfig(**fields)  # type: ignore[arg-type]


async def validate(
    req: TrainingConfig,
    datasets: FakeDatasets,
    tmp_path: Path,
    device: DeviceInfo = CPU,
    estimator: FakeEstimator | None = None,
):
    return await validate_request(
        req, Hyperparameters(), data_dir=tmp_path, device=device, datasets=datasets, estimator=estimator
    )


def fields_of(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


async def test_valid_request_resolves_defaults(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    spec = await validate(request(model_dir), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    config = spec.config
    assert config.provider == "huggingface"
    assert config.strategy == "sft"
    assert config.model_name == str(model_dir)
    assert spec.local_model is True
    assert spec.dataset_path == str(chat_dataset)
    assert config.learning_rate == Hyperparameters().learning_rate
    assert config.bf16 is False  # CPU trains in fp32
    assert config.max_steps == -1
    assert config.use_4bit is False


async def test_unknown_task_uses_the_spec_message(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir, task="xyz"), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    expected = "Invalid task: xyz. Must be one of ['text-generation', 'summarization', 'extractive-question-answering']"
    assert caught.value.message == expected
    assert fields_of(caught.value) == {"task": expected}


async def test_every_bad_number_is_reported_at_once(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    bad = request(
        model_dir,
        learning_rate=-0.1,
        num_train_epochs=0.0,
        per_device_train_batch_size=0,
        lora_r=0,
        max_seq_length=8,
        warmup_ratio=1.5,
        eval_split=0.9,
        lora_dropout=1.0,
        optim="nope",
        lr_scheduler_type="sometimes",
    )
    with pytest.raises(InvalidArgument) as caught:
        await validate(bad, FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    found = fields_of(caught.value)
    assert found["learning_rate"] == "learning_rate must be > 0 and < 1, got -0.1"  # common.proto's SettingRule
    assert found["max_seq_length"] == "max_seq_length must be >= 16 and <= 131072, got 8"
    assert set(found) == {
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "lora_r",
        "max_seq_length",
        "warmup_ratio",
        "eval_split",
        "lora_dropout",
        "optim",
        "lr_scheduler_type",
    }
    assert "learning_rate must be > 0" in caught.value.message


async def test_unknown_dataset_is_reported_as_not_found(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir, dataset="missing.jsonl"), FakeDatasets(), tmp_path)
    assert caught.value.message == "Dataset validation failed: File not found: missing.jsonl"
    assert fields_of(caught.value) == {"dataset": "Dataset validation failed: File not found: missing.jsonl"}


async def test_bad_rows_are_reported_with_line_and_field(model_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(12)]
    rows[2] = {"prompt": "no answer here", "completion": ""}
    lines = [json.dumps(row) for row in rows]
    lines[6] = "{not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir, dataset="bad.jsonl"), FakeDatasets({"bad.jsonl": path}), tmp_path)
    found = fields_of(caught.value)
    assert found["dataset/line 3/completion"] == "must not be empty"
    assert found["dataset/line 7"].startswith("not valid JSON")
    assert caught.value.message.startswith("Dataset validation failed: 2 problem(s): line 3, field completion")


async def test_unsupported_provider_names_what_is_supported(
    model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    pairs = write_jsonl(preference_rows(12), tmp_path / "pairs.jsonl")
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(model_dir, strategy="rlhf", provider="unsloth", dataset="pairs.jsonl"),
            FakeDatasets({"pairs.jsonl": pairs}),
            tmp_path,
            device=GPU,
        )
    supported = list(implemented_providers("text-generation", "rlhf"))
    assert "unsloth" not in supported
    assert fields_of(caught.value) == {
        "provider": f"Provider unsloth does not support rlhf for text-generation yet. Supported providers: {supported}"
    }


async def test_rlhf_needs_an_even_batch(model_dir: Path, tmp_path: Path) -> None:
    pairs = write_jsonl(preference_rows(12), tmp_path / "pairs.jsonl")
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(
                model_dir,
                strategy="rlhf",
                dataset="pairs.jsonl",
                per_device_train_batch_size=3,
                gradient_accumulation_steps=1,
            ),
            FakeDatasets({"pairs.jsonl": pairs}),
            tmp_path,
        )
    assert list(fields_of(caught.value)) == ["per_device_train_batch_size"]
    assert "must be even, got 3" in caught.value.message


async def test_rows_must_suit_the_strategy(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir, strategy="dpo"), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    found = fields_of(caught.value)
    assert found["dataset/line 1"] == "has fields ['messages']; expected one of: prompt+chosen+rejected"
    assert caught.value.message.startswith("Dataset validation failed: 20 problem(s)")


async def test_strategy_not_available_for_the_task(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(model_dir, task="extractive-question-answering", strategy="dpo"),
            FakeDatasets({"chat.jsonl": chat_dataset}),
            tmp_path,
        )
    assert fields_of(caught.value) == {
        "strategy": "Strategy dpo is not available for extractive-question-answering. Must be one of ['sft']"
    }


async def test_unknown_strategy_and_provider(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(model_dir, strategy="magic", provider="acme"), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path
        )
    found = fields_of(caught.value)
    assert found["strategy"] == "Invalid strategy: magic. Must be one of ['sft', 'qlora', 'dpo', 'rlhf']"
    assert found["provider"] == "Invalid provider: acme. Must be one of ['huggingface', 'unsloth']"


async def test_unsloth_needs_a_gpu(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir, provider="unsloth"), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    assert fields_of(caught.value) == {"provider": "unsloth requires an NVIDIA GPU"}


async def test_unsloth_on_a_gpu_passes(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    config = await validate(
        request(model_dir, provider="unsloth"), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path, device=GPU
    )
    assert config.config.provider == "unsloth"
    assert config.config.bf16 is True


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("", "model_name is required"),
        ("./no/such/folder", "model_name './no/such/folder' is not a model folder inside the allowed model roots"),
        ("~nosuchuser", "model_name '~nosuchuser' is not a model folder inside the allowed model roots"),
        ("/" + "a" * 300, "model_name '/aaaa"),
        ("/proc/1/root", "model_name '/proc/1/root' is not a model folder inside the allowed model roots"),
        ("/etc", "model_name '/etc' is not a model folder inside the allowed model roots"),
        ("just-a-name", "Invalid model_name: just-a-name."),
    ],
)
async def test_bad_model_names(model_name: str, expected: str, chat_dataset: Path, tmp_path: Path) -> None:
    req = TrainingConfig(task="text-generation", model_name=model_name, dataset="chat.jsonl")
    with pytest.raises(InvalidArgument) as caught:
        await validate(req, FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    assert fields_of(caught.value)["model_name"].startswith(expected)


async def test_model_folder_needs_config_json(chat_dataset: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    req = TrainingConfig(task="text-generation", model_name=str(empty), dataset="chat.jsonl")
    with pytest.raises(InvalidArgument) as caught:
        await validate(req, FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path)
    assert fields_of(caught.value) == {"model_name": f"Model folder {empty.resolve()} has no config.json"}


async def test_hub_ids_and_data_dir_folders_are_accepted(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    datasets = FakeDatasets({"chat.jsonl": chat_dataset})
    hub = await validate(request(model_dir, model_name="meta-llama/Llama-3.2-1B"), datasets, tmp_path)
    assert (hub.config.model_name, hub.local_model) == ("meta-llama/Llama-3.2-1B", False)
    inside = await validate(request(model_dir, model_name=model_dir.name), datasets, tmp_path)
    assert (inside.config.model_name, inside.local_model) == (str(model_dir), True)


async def test_memory_refusal_names_the_estimate(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    estimator = FakeEstimator(
        MemoryEstimate(fits=False, total_bytes=40 * 1024**3, available_bytes=8 * 1024**3, device="cpu")
    )
    with pytest.raises(InvalidArgument) as caught:
        await validate(request(model_dir), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path, estimator=estimator)
    assert "40.00 GiB" in caught.value.message and "8.00 GiB" in caught.value.message
    assert str(40 * 1024**3) in caught.value.message
    query = estimator.queries[0]
    assert (query.precision, query.batch_size, query.lora_r) == ("fp32", 2, 16)


async def test_memory_refusal_passes_the_provider_and_carries_the_proposals(
    model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    proposals = "Largest parts: weights 7.27 GiB. Settings that fit: (1) provider=unsloth: the unsloth provider."
    estimator = FakeEstimator(
        MemoryEstimate(fits=False, total_bytes=9 * 1024**3, available_bytes=7 * 1024**3, device="cuda:0",
                       message=proposals)
    )
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(model_dir, gradient_accumulation_steps=3, lora_dropout=0.0),
            FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path, estimator=estimator,
        )
    assert proposals in caught.value.message and "force" in caught.value.message
    query = estimator.queries[0]
    assert (query.provider, query.lora_dropout, query.gradient_accumulation_steps) == ("huggingface", 0.0, 3)
    assert query.providers == ("huggingface",)  # no GPU here: unsloth is never proposed


async def test_force_starts_despite_the_estimate(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    estimator = FakeEstimator(MemoryEstimate(fits=False, total_bytes=2, available_bytes=1, device="cpu"))
    config = await validate(
        request(model_dir, force=True), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path, estimator=estimator
    )
    assert config.config.task == "text-generation"


async def test_unreachable_hardware_service_is_not_fatal(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    estimator = FakeEstimator(Unavailable("hardware-svc failed (UNAVAILABLE)"))
    config = await validate(
        request(model_dir), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path, estimator=estimator
    )
    assert config.config.task == "text-generation"


async def test_qlora_with_use_4bit_false_is_contradictory(model_dir: Path, chat_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await validate(
            request(model_dir, strategy="qlora", use_4bit=False), FakeDatasets({"chat.jsonl": chat_dataset}), tmp_path
        )
    assert fields_of(caught.value) == {
        "use_4bit": "Strategy qlora trains a 4-bit quantized base model: use_4bit must not be false"
    }


def test_device_detection_agrees_with_torch() -> None:
    device = detect_device()
    assert device.cuda is torch.cuda.is_available()
    assert device.bf16 is (device.cuda and torch.cuda.is_bf16_supported(including_emulation=False))


async def test_gradient_checkpointing_asked_for_reaches_the_estimate_and_the_job(
    model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    # A proposal of the memory gate ("gradient_checkpointing=true") must be something a start can apply.
    estimator = FakeEstimator(MemoryEstimate(fits=True, total_bytes=1, available_bytes=2, device="cpu"))
    datasets = FakeDatasets({"chat.jsonl": chat_dataset})
    config = await validate(request(model_dir, gradient_checkpointing=True), datasets, tmp_path, estimator=estimator)
    assert config.config.gradient_checkpointing is True
    assert estimator.queries[0].gradient_checkpointing is True
    unset = await validate(request(model_dir), datasets, tmp_path, estimator=estimator)
    assert not unset.config.HasField("gradient_checkpointing")  # decided by the device when it trains
    assert estimator.queries[1].gradient_checkpointing is False  # no GPU here: off unless asked for
