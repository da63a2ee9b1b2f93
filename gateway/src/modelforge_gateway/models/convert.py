"""Registry models -> the models endpoints' answers."""

from __future__ import annotations

from typing import Any

from modelforge.v1 import registry_pb2
from modelforge_common.catalog import TRAINING_SETTINGS
from modelforge_gateway.models.models import ModelLineageResponse

# The start_training settings a reproduce body repeats. Left out: the name (names are unique, the
# second run gets its own), resume_from_job and compute_specs (every setting it implies is explicit).
REPRODUCED_SETTINGS = TRAINING_SETTINGS


def reproduce_body(lineage: dict[str, Any]) -> dict[str, Any]:
    """A POST /api/start_training body for the same base, the same dataset (by name, pinned by its
    sha256) and the same settings."""
    config = lineage["config"]
    return {
        "task": lineage["task"],
        "model_name": lineage["base_model"]["name"],
        "provider": lineage["provider"],
        "strategy": lineage["strategy"],
        "dataset": lineage["dataset"]["filename"],
        "dataset_sha256": lineage["dataset"]["sha256"] or None,
        **{name: config[name] for name in REPRODUCED_SETTINGS if name in config},
    }


def lineage_response(model: registry_pb2.Model, lineage: dict[str, Any]) -> ModelLineageResponse:
    return ModelLineageResponse(model_id=model.model_id, **lineage, reproduce=reproduce_body(lineage))


def list_request(
    task: str | None,
    base_model: str | None,
    strategy: str | None,
    provider: str | None,
    status: str | None,
    limit: int | None,
    offset: int,
) -> registry_pb2.ListModelsRequest:
    """The filters of GET /api/models; unset ones are the registry's "any"."""
    return registry_pb2.ListModelsRequest(
        task=task or "",
        base_model=base_model or "",
        strategy=strategy or "",
        provider=provider or "",
        status=status or "",
        limit=limit or 0,
        offset=offset,
    )
