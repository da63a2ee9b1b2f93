"""Dataset requests -> registry messages, registry and trainer answers -> the dataset bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import UploadFile

from modelforge.v1 import registry_pb2, trainer_pb2
from modelforge_gateway.common.protoconv import MIB, iso_z
from modelforge_gateway.datasets.models import (
    DatasetInsightResponse,
    DatasetSummary,
    DatasetValidation,
    HubDatasetRequest,
    HubDatasetResponse,
    TokenLengths,
    UploadDatasetResponse,
)


async def upload_messages(
    filename: str, upload: UploadFile, chunk_bytes: int, column_mapping: dict[str, str] | None = None
) -> AsyncIterator[registry_pb2.UploadDatasetRequest]:
    """UploadDataset's request stream: the filename first, the options, then the content in chunks."""
    yield registry_pb2.UploadDatasetRequest(filename=filename)
    if column_mapping:
        options = registry_pb2.DatasetUploadOptions(column_mapping=column_mapping)
        yield registry_pb2.UploadDatasetRequest(options=options)
    while chunk := await upload.read(chunk_bytes):
        yield registry_pb2.UploadDatasetRequest(chunk=chunk)


def hub_dataset_request(body: HubDatasetRequest) -> registry_pb2.RegisterHubDatasetRequest:
    return registry_pb2.RegisterHubDatasetRequest(
        repo_id=body.repo_id,
        config=body.config,
        split=body.split,
        revision=body.revision,
        column_mapping={str(field): column for field, column in body.column_mapping.items()},
    )


def dataset_summary(dataset: registry_pb2.Dataset) -> DatasetSummary:
    return DatasetSummary(
        filename=dataset.filename,
        num_examples=dataset.num_examples,
        # Four decimals so a small file does not read as 0 MB.
        size_mb=round(dataset.size_bytes / MIB, 4),
        uploaded_at=iso_z(dataset.uploaded_at),
        columns=list(dataset.fields),
        column_mapping=dict(dataset.column_mapping),
        source={field.name: value for field, value in dataset.source.ListFields()},
    )


def issue_text(issue: registry_pb2.DatasetIssue) -> str:
    where = f"line {issue.line}" if issue.line else "file"
    field = f", field {issue.field}" if issue.field else ""
    return f"{where}{field}: {issue.message}"


def upload_reply(dataset: registry_pb2.Dataset) -> UploadDatasetResponse:
    return UploadDatasetResponse(
        filename=dataset.filename,
        num_examples=dataset.num_examples,
        validation=DatasetValidation(valid=dataset.valid, errors=[issue_text(i) for i in dataset.issues]),
    )


def hub_dataset_reply(dataset: registry_pb2.Dataset) -> HubDatasetResponse:
    return HubDatasetResponse(**upload_reply(dataset).model_dump(), dataset=dataset_summary(dataset))


def insight_request(name: str, model: str, max_length: int, sample_size: int) -> trainer_pb2.InspectDatasetRequest:
    return trainer_pb2.InspectDatasetRequest(
        dataset=name, model_name=model, max_length=max_length, sample_size=sample_size
    )


def insight(reply: trainer_pb2.InspectDatasetResponse) -> DatasetInsightResponse:
    return DatasetInsightResponse(
        dataset=reply.dataset,
        model_name=reply.model_name,
        rows=reply.rows,
        max_length=reply.max_length,
        fields=[
            TokenLengths(field=f.field, min=f.min, p50=f.p50, p95=f.p95, max=f.max, mean=f.mean, rows=f.rows)
            for f in reply.fields
        ],
        rows_over_max_length=reply.rows_over_max_length,
        duplicate_rows=reply.duplicate_rows,
        empty_fields=dict(reply.empty_fields),
        samples=list(reply.samples),
        total_lengths=list(reply.total_lengths),
        chat_template=reply.chat_template,
    )
