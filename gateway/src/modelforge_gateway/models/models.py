"""Response bodies of the models endpoints (the model records themselves: common.model_records)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from modelforge_gateway.common.model_records import ModelSummary


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
    # Every model matching the filters, not only this page.
    total: int


class ModelLineageResponse(BaseModel):
    """GET /api/models/{id}/lineage: the lineage alone, plus a start_training body that runs it again."""

    model_id: str
    base_model: dict[str, Any]
    dataset: dict[str, Any]
    config: dict[str, Any]
    task: str
    strategy: str
    provider: str
    environment: dict[str, Any]
    job: dict[str, Any]
    metrics: dict[str, float]
    loss_curve: list[dict[str, Any]]
    parent_model_id: str | None
    reproduce: dict[str, Any]


class DeleteModelResponse(BaseModel):
    success: bool = True
    status: Literal["deleted"] = "deleted"
    message: str
    model_id: str
