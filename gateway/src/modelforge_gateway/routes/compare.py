"""Runs side by side: GET /api/compare?model=A&model=B[...] (two to five models).

Each model's loss and learning-rate series (the loss curve its lineage recorded), its evaluation
metrics and tracking link, and one row per setting (base model, dataset, the training settings)
with the values of every model and whether they differ. The console's Models page overlays the
curves and shows the rows that differ; `modelforge models compare` prints them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, StringConstraints

from modelforge_common.catalog import TRAINING_SETTINGS
from modelforge_gateway.convert import model_details, model_lineage
from modelforge_gateway.deps import RegistryStub, Rpc
from modelforge_gateway.errors import invalid
from modelforge_gateway.routes.models import fetch_model

router = APIRouter(tags=["models"])

MIN_MODELS = 2
MAX_MODELS = 5
# Rows before the training settings: what the run was made of.
RUN_SETTINGS = ("base_model", "task", "strategy", "provider", "dataset", "dataset_sha256", "adapter_type")


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


def _settings_of(details: dict[str, Any], lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The values a model was trained with: its lineage's when recorded, else its stored config."""
    config = dict(details.get("config") or {})
    if lineage is not None:
        config.update(lineage.get("config") or {})
    found: dict[str, Any] = {
        "base_model": details.get("base_model"),
        "task": details.get("task"),
        "strategy": details.get("strategy"),
        "provider": details.get("provider"),
        "dataset": (lineage or {}).get("dataset", {}).get("filename") or config.get("dataset"),
        "dataset_sha256": (lineage or {}).get("dataset", {}).get("sha256") or None,
        "adapter_type": details.get("adapter_type"),
    }
    for name in TRAINING_SETTINGS:
        found[name] = config.get(name)
    return found


def _same(values: list[Any]) -> bool:
    def key(value: Any) -> Any:
        # 2 and 2.0 are one setting (JSON numbers through a protobuf Struct come back as floats).
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    first = key(values[0])
    return all(key(value) == first for value in values[1:])


def comparison(models: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> ComparisonResponse:
    """The comparison of models given as (model_details, model_lineage) pairs."""
    compared = []
    settings_per_model = []
    for details, lineage in models:
        curve = [CurvePoint(**point) for point in (lineage or {}).get("loss_curve", [])]
        compared.append(
            ComparedModel(
                id=details["id"],
                model_id=details["model_id"],
                name=details["name"],
                base_model=details["base_model"],
                # The job's final status, as its lineage recorded it ("" for a model not trained here).
                status=((lineage or {}).get("job") or {}).get("status") or "",
                created_at=details.get("created_at"),
                metrics=details.get("metrics") or {},
                loss_curve=curve,
                tracking_url=(details.get("config") or {}).get("tracking_url") or None,
            )
        )
        settings_per_model.append(_settings_of(details, lineage))
    rows = []
    for name in (*RUN_SETTINGS, *TRAINING_SETTINGS):
        values = [settings.get(name) for settings in settings_per_model]
        rows.append(ComparedSetting(name=name, values=values, differs=not _same(values)))
    return ComparisonResponse(models=compared, settings=rows, differing=[row.name for row in rows if row.differs])


ModelsQuery = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"\S")]],
    Query(
        alias="model",
        min_length=MIN_MODELS,
        max_length=MAX_MODELS,
        description="A model's numeric id or model_id, two to five different ones",
        json_schema_extra={"uniqueItems": True},
    ),
]


@router.get("/api/compare", response_model=ComparisonResponse)
async def compare_models(registry: RegistryStub, rpc: Rpc, models: ModelsQuery) -> ComparisonResponse:
    """Two to five registered models side by side: loss curves, metrics and the settings that differ.
    400 for fewer than two, more than five or the same model twice; 404 naming an unknown model."""
    if len(set(models)) != len(models):
        raise invalid(["query", "model"], "names the same model twice: compare different models")
    found = await asyncio.gather(*(fetch_model(registry, rpc, model_id) for model_id in models))
    ids = [model.id for model in found]
    if len(set(ids)) != len(ids):
        raise invalid(["query", "model"], "names the same model twice: compare different models")
    return comparison([(model_details(model), model_lineage(model)) for model in found])
