"""Response bodies of GET /api/compare."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class CurvePoint(BaseModel):
    step: int
    loss: float
    learning_rate: float | None = None
    epoch: float | None = None


class ComparedModel(BaseModel):
    id: int
    model_id: str
    name: str
    base_model: str
    status: str
    created_at: str | None = None
    # Final metrics (final_loss, eval_loss, perplexity, ...).
    metrics: dict[str, float]
    loss_curve: list[CurvePoint]
    tracking_url: str | None = None


class ComparedSetting(BaseModel):
    name: str
    # One value per model, in the order of `models` (null where a model has no such setting).
    values: list[Any]
    differs: bool


class ComparisonResponse(BaseModel):
    models: list[ComparedModel]
    settings: list[ComparedSetting]
    # The names of the settings whose values differ.
    differing: list[str]
