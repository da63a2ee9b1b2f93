"""Runs side by side: GET /api/compare?model=A&model=B[...] (two to five models).

Each model's loss and learning-rate series (the loss curve its lineage recorded), its evaluation
metrics and tracking link, and one row per setting (base model, dataset, the training settings)
with the values of every model and whether they differ. The console's Models page overlays the
curves and shows the rows that differ; `modelforge models compare` prints them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import StringConstraints

from modelforge_gateway.common.model_records import details_fields, model_lineage
from modelforge_gateway.compare.convert import comparison
from modelforge_gateway.compare.models import ComparisonResponse
from modelforge_gateway.deps import RegistryStub, Rpc
from modelforge_gateway.errors import invalid
from modelforge_gateway.upstream.models import fetch_model

router = APIRouter(tags=["models"])

MIN_MODELS = 2
MAX_MODELS = 5


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
    return comparison([(details_fields(model), model_lineage(model)) for model in found])
