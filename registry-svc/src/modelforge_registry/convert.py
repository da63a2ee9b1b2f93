"""Protobuf <-> domain values (Struct for JSON objects, Timestamp for UTC datetimes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from modelforge.v1 import registry_pb2
from modelforge_registry.domain import (
    DatasetInfo,
    ModelFilter,
    ModelInfo,
    NewModel,
)


def struct_of(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def timestamp_of(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def new_model_of(message: registry_pb2.Model) -> NewModel:
    return NewModel(
        path=message.path,
        name=message.name,
        base_model=message.base_model,
        task=message.task,
        strategy=message.strategy,
        provider=message.provider,
        size_mb=message.size_mb,
        config=dict_of(message.config),
        training_params=dict_of(message.training_params),
        metrics=dict(message.metrics),
        job_id=message.job_id,
        adapter_type=message.adapter_type,
        file_sha256=dict(message.file_sha256),
        lineage=lineage_dict(message.lineage) if message.HasField("lineage") else None,
    )


def lineage_dict(lineage: registry_pb2.Lineage) -> dict[str, Any]:
    """Stored as JSON with the proto field names; json_format reads it back losslessly."""
    return json_format.MessageToDict(lineage, preserving_proto_field_name=True)


def lineage_pb(values: dict[str, Any]) -> registry_pb2.Lineage:
    # Stored lineage was written by this code; a field a newer writer added is skipped, not fatal.
    return json_format.ParseDict(values, registry_pb2.Lineage(), ignore_unknown_fields=True)


def model_filter_of(request: registry_pb2.ListModelsRequest) -> ModelFilter:
    return ModelFilter(
        task=request.task,
        base_model=request.base_model,
        strategy=request.strategy,
        provider=request.provider,
        status=request.status,
        limit=request.limit,
        offset=request.offset,
        full=request.view == registry_pb2.MODEL_VIEW_FULL,
    )


def model_pb(model: ModelInfo) -> registry_pb2.Model:
    return registry_pb2.Model(
        id=model.id,
        model_id=model.model_id,
        name=model.name,
        base_model=model.base_model,
        task=model.task,
        strategy=model.strategy,
        provider=model.provider,
        created_at=timestamp_of(model.created_at),
        size_mb=model.size_mb,
        path=str(model.path),
        config=struct_of(model.config),
        training_params=struct_of(model.training_params),
        metrics=model.metrics,
        job_id=model.job_id,
        adapter_type=model.adapter_type,
        file_sha256=model.file_sha256,
        lineage=lineage_pb(model.lineage) if model.lineage is not None else None,
    )


def dataset_pb(dataset: DatasetInfo) -> registry_pb2.Dataset:
    return registry_pb2.Dataset(
        filename=dataset.filename,
        num_examples=dataset.num_examples,
        size_bytes=dataset.size_bytes,
        uploaded_at=timestamp_of(dataset.uploaded_at),
        path=str(dataset.path),
        sha256=dataset.sha256,
        fields=list(dataset.fields),
        valid=dataset.valid,
        issues=[
            registry_pb2.DatasetIssue(line=issue.line, field=issue.field, message=issue.message)
            for issue in dataset.issues
        ],
        column_mapping=dataset.column_mapping,
        source=registry_pb2.DatasetSource(**{k: v for k, v in dataset.source.items() if k in _SOURCE_FIELDS}),
    )


_SOURCE_FIELDS = set(registry_pb2.DatasetSource.DESCRIPTOR.fields_by_name)
