"""Recommended models and default training settings per task and profile, from recommendations.yaml.

The file is validated when loaded: a missing or unknown task, profile or field is an error at
start-up, not a surprise in a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelforge_common.catalog import PROFILES, TASKS

DEFAULT_FILE = Path(__file__).with_name("recommendations.yaml")
# Defaults key for nodes without a GPU (their profile is low_end, but they train on the CPU).
CPU_DEFAULTS = "cpu"


class RecommendationsError(ValueError):
    """recommendations.yaml is malformed."""


class TrainingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    per_device_train_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0, lt=1)
    num_train_epochs: float = Field(gt=0)
    max_seq_length: int = Field(ge=16)
    lora_r: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    use_4bit: bool
    bf16: bool
    warmup_ratio: float = Field(ge=0, lt=1)
    lr_scheduler_type: str = Field(min_length=1)
    optim: str = Field(min_length=1)


class ModelChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    recommended: str = Field(min_length=1)
    options: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _recommended_is_first_option(self) -> ModelChoice:
        if not self.options or self.options[0] != self.recommended:
            raise ValueError("options must start with the recommended model")
        if len(set(self.options)) != len(self.options):
            raise ValueError("options repeat a model")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    models: dict[str, dict[str, ModelChoice]]
    defaults: dict[str, TrainingDefaults]
    task_overrides: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Recommendation:
    task: str
    profile: str
    recommended_model: str
    possible_models: tuple[str, ...]
    defaults: TrainingDefaults


def _require_keys(where: str, found: set[str], expected: set[str]) -> None:
    missing, unknown = sorted(expected - found), sorted(found - expected)
    if missing or unknown:
        raise RecommendationsError(f"{where}: missing {missing}, unknown {unknown}")


@dataclass(frozen=True)
class Recommendations:
    models: dict[str, dict[str, ModelChoice]]
    defaults: dict[str, TrainingDefaults]
    task_overrides: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path = DEFAULT_FILE) -> Recommendations:
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "recommendations") -> Recommendations:
        try:
            raw = _File.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise RecommendationsError(f"{source}: {exc}") from exc
        _require_keys(f"{source} models", set(raw.models), set(TASKS))
        for task, by_profile in raw.models.items():
            _require_keys(f"{source} models.{task}", set(by_profile), set(PROFILES))
        _require_keys(f"{source} defaults", set(raw.defaults), {*PROFILES, CPU_DEFAULTS})
        _require_keys(f"{source} task_overrides", set(raw.task_overrides), set(TASKS))
        for task, override in raw.task_overrides.items():
            for base in raw.defaults.values():
                try:  # every override must make valid defaults on every profile
                    TrainingDefaults.model_validate({**base.model_dump(), **override})
                except ValidationError as exc:
                    raise RecommendationsError(f"{source} task_overrides.{task}: {exc}") from exc
        return cls(models=raw.models, defaults=raw.defaults, task_overrides=raw.task_overrides)

    def for_task(self, task: str, profile: str, device_type: str, bf16_supported: bool = True) -> Recommendation:
        """Models for `task` on `profile`, with the defaults of the profile (the CPU's on a node
        without a GPU), the task's overrides, and bf16 off where the GPU lacks it (before Ampere)."""
        choice = self.models[task][profile]
        base = self.defaults[CPU_DEFAULTS if device_type == "cpu" else profile]
        values = {**base.model_dump(), **self.task_overrides[task]}
        values["bf16"] = values["bf16"] and bf16_supported
        return Recommendation(
            task=task,
            profile=profile,
            recommended_model=choice.recommended,
            possible_models=tuple(choice.options),
            defaults=TrainingDefaults.model_validate(values),
        )
