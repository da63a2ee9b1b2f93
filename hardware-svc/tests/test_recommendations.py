"""recommendations.yaml: every task x profile, the spec's cells, and loud failures on bad files."""

from __future__ import annotations

import pytest
import yaml

from modelforge_common.catalog import PROFILES, TASKS
from modelforge_hardware.recommendations import DEFAULT_FILE, Recommendations, RecommendationsError

SPEC_LOAD_SETTINGS = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "num_train_epochs": 3,
    "max_seq_length": 2048,
    "lora_r": 64,
    "lora_alpha": 128,
    "use_4bit": True,
    "bf16": True,
    "warmup_ratio": 0.03,
    "lr_scheduler_type": "cosine",
    "optim": "paged_adamw_32bit",
}


@pytest.fixture(scope="module")
def recommendations() -> Recommendations:
    return Recommendations.load()


def test_text_generation_mid_range_is_the_spec_example(recommendations: Recommendations) -> None:
    cell = recommendations.for_task("text-generation", "mid_range", "cuda")

    assert cell.recommended_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert list(cell.possible_models) == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "qwen/Qwen2.5-7B",
        "mistralai/Mistral-Small-3.1-24B-Base-2503",
    ]
    assert cell.defaults.model_dump() == SPEC_LOAD_SETTINGS


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_cell_has_models_and_defaults(recommendations: Recommendations, task: str, profile: str) -> None:
    cell = recommendations.for_task(task, profile, "cuda")

    assert cell.task == task
    assert cell.profile == profile
    assert cell.possible_models[0] == cell.recommended_model
    assert all("/" in model for model in cell.possible_models)
    assert cell.defaults.per_device_train_batch_size >= 1
    assert cell.defaults.lora_alpha >= cell.defaults.lora_r


@pytest.mark.parametrize("task", TASKS)
def test_cpu_defaults_avoid_cuda_features(recommendations: Recommendations, task: str) -> None:
    defaults = recommendations.for_task(task, "low_end", "cpu").defaults

    assert not defaults.bf16
    assert not defaults.use_4bit
    assert defaults.optim == "adamw_torch"
    assert "paged" not in defaults.optim


def test_low_end_trains_in_4bit_with_less_than_mid_range(recommendations: Recommendations) -> None:
    low = recommendations.for_task("text-generation", "low_end", "cuda").defaults
    mid = recommendations.for_task("text-generation", "mid_range", "cuda").defaults

    assert low.use_4bit
    assert low.per_device_train_batch_size <= mid.per_device_train_batch_size
    assert low.max_seq_length < mid.max_seq_length


def test_gpu_without_bf16_gets_bf16_off(recommendations: Recommendations) -> None:
    assert not recommendations.for_task("text-generation", "mid_range", "cuda", bf16_supported=False).defaults.bf16


def test_extractive_qa_recommends_span_encoders(recommendations: Recommendations) -> None:
    for profile in PROFILES:
        cell = recommendations.for_task("extractive-question-answering", profile, "cuda")
        assert any(family in cell.recommended_model.lower() for family in ("bert", "roberta", "deberta"))
        assert cell.defaults.max_seq_length == 384
        assert not cell.defaults.use_4bit


def _edited(edit: object) -> str:
    data = yaml.safe_load(DEFAULT_FILE.read_text(encoding="utf-8"))
    edit(data)  # type: ignore[operator]
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (lambda d: d["models"].update({"translation": d["models"]["summarization"]}), "translation"),
        (lambda d: d["models"].pop("summarization"), "summarization"),
        (lambda d: d["models"]["text-generation"].update({"ultra_end": {"recommended": "a/b", "options": ["a/b"]}}),
         "ultra_end"),
        (lambda d: d["defaults"].pop("cpu"), "cpu"),
        (lambda d: d["defaults"].update({"gpu_farm": d["defaults"]["cpu"]}), "gpu_farm"),
        (lambda d: d["defaults"]["mid_range"].update({"lora_dropout": 0.05}), "lora_dropout"),
        (lambda d: d["defaults"]["mid_range"].pop("optim"), "optim"),
        (lambda d: d["defaults"]["mid_range"].update({"learning_rate": "2e-4"}), "learning_rate"),
        (lambda d: d["task_overrides"].update({"translation": {}}), "translation"),
        (lambda d: d["task_overrides"]["summarization"].update({"max_seq_len": 512}), "max_seq_len"),
        (lambda d: d["models"]["summarization"]["low_end"].update({"recommended": "x/y"}), "recommended"),
        (lambda d: d.update({"extra": 1}), "extra"),
    ],
)
def test_bad_files_fail_loudly(edit: object, complaint: str) -> None:
    with pytest.raises(RecommendationsError, match=complaint):
        Recommendations.parse(_edited(edit))


def test_unparsable_yaml_fails() -> None:
    with pytest.raises(RecommendationsError):
        Recommendations.parse("models: [unclosed")
