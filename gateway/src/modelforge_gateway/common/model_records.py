"""A registered model as the API shows it: the records the models, hub and compare slices answer
with, converted from the registry's Model message in one place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from modelforge.v1 import registry_pb2
from modelforge_gateway.common.protoconv import iso_z, struct_dict


class ModelSummary(BaseModel):
    id: int
    model_id: str
    name: str
    base_model: str
    task: str
    strategy: str
    provider: str
    created_at: str | None
    size_mb: float
    path: str


class ModelDetails(ModelSummary):
    config: dict[str, Any]
    training_params: dict[str, Any]
    metrics: dict[str, float]
    job_id: str
    adapter_type: str
    # Beside the documented fields: what the model was trained from (null when not recorded).
    lineage: dict[str, Any] | None = None


def summary_fields(model: registry_pb2.Model) -> dict[str, Any]:
    """Union of rest-api.md and responses.md model fields (also the head of ModelDetails)."""
    return {
        "id": int(model.id),
        "model_id": model.model_id,
        "name": model.name,
        "base_model": model.base_model,
        "task": model.task,
        "strategy": model.strategy,
        "provider": model.provider,
        "created_at": iso_z(model.created_at),
        "size_mb": round(model.size_mb, 2),
        "path": model.path,
    }


def model_summary(model: registry_pb2.Model) -> ModelSummary:
    return ModelSummary(**summary_fields(model))


def details_fields(model: registry_pb2.Model) -> dict[str, Any]:
    """ModelDetails' fields without the lineage (the merge answer extends them)."""
    return {
        **summary_fields(model),
        "config": struct_dict(model.config),
        "training_params": struct_dict(model.training_params),
        "metrics": dict(model.metrics),
        "job_id": model.job_id,
        "adapter_type": model.adapter_type,
    }


def model_details(model: registry_pb2.Model) -> ModelDetails:
    return ModelDetails(**details_fields(model), lineage=model_lineage(model))


def model_lineage(model: registry_pb2.Model) -> dict[str, Any] | None:
    """The Lineage message as public JSON (plain numbers, ISO times); None when none was recorded."""
    if not model.HasField("lineage"):
        return None
    lineage = model.lineage
    base, dataset, environment, job = lineage.base_model, lineage.dataset, lineage.environment, lineage.job
    return {
        "base_model": {
            "name": base.name,
            "local": base.local,
            "config_sha256": base.config_sha256,
            "revision": base.revision or None,
        },
        "dataset": {
            "filename": dataset.filename,
            "path": dataset.path,
            "sha256": dataset.sha256,
            "num_rows": dataset.num_rows,
            "train_rows": dataset.train_rows,
            "eval_rows": dataset.eval_rows,
            "eval_split": dataset.eval_split,
            "seed": dataset.seed,
            # Only for datasets read through a column mapping / not uploaded as JSONL.
            **({"column_mapping": dict(dataset.column_mapping)} if dataset.column_mapping else {}),
            **({"source": dict(dataset.source)} if dataset.source else {}),
        },
        "config": struct_dict(lineage.config),
        "task": lineage.task,
        "strategy": lineage.strategy,
        "provider": lineage.provider,
        "environment": {
            "versions": dict(environment.versions),
            "device": environment.device,
            "python": environment.python,
            # Jobs of several processes (issue 19); lineage from before them says 1 process.
            "world_size": environment.world_size or 1,
            "distributed": environment.distributed,
            "processes_per_node": environment.processes_per_node or 1,
            "num_nodes": environment.num_nodes or 1,
        },
        "job": {
            "job_id": job.job_id,
            "queued_at": iso_z(job.queued_at, millis=True),
            "started_at": iso_z(job.started_at, millis=True),
            "finished_at": iso_z(job.finished_at, millis=True),
            "duration_s": job.duration_s,
            "status": job.status,
            "owner": job.owner,
        },
        "metrics": dict(lineage.metrics),
        "loss_curve": [
            {
                "step": point.step,
                "loss": point.loss,
                "learning_rate": point.learning_rate if point.HasField("learning_rate") else None,
                "epoch": point.epoch,
            }
            for point in lineage.loss_curve
        ],
        "parent_model_id": lineage.parent_model_id or None,
    }
