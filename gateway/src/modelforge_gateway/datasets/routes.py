"""Dataset upload (JSONL, JSON, CSV or Parquet, streamed to registry-svc in chunks, optionally with
a column mapping), registration of a Hub dataset split (POST /api/hub/datasets), listing, insight
and deletion."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from modelforge.v1 import registry_pb2, trainer_pb2
from modelforge_gateway.convert import dataset_summary, issue_text
from modelforge_gateway.deps import RegistryStub, Rpc, SettingsDep, TrainerStub
from modelforge_gateway.errors import ApiError, invalid
from modelforge_gateway.routes.hub import HUB_REPO_NAME, HUB_REPO_NAME_MAX_LENGTH
from modelforge_gateway.schemas import (
    DatasetsResponse,
    DatasetSummary,
    DatasetValidation,
    DeleteDatasetResponse,
    HubDatasetResponse,
    UploadDatasetResponse,
)

router = APIRouter(tags=["datasets"])


def upload_filename(upload: UploadFile) -> str:
    """The client's file name without any directory part (browsers may send one)."""
    raw = (upload.filename or "").replace("\\", "/")
    name = PurePath(raw).name.strip()
    if not name or name in (".", ".."):
        raise invalid(["body", "file"], "the uploaded file needs a file name")
    return name


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


MAPPING_DESCRIPTION = (
    'Format field -> the dataset\'s column it is read from, e.g. {"prompt": "question", "completion": "answer"}'
)
_MAX_MAPPING_CHARS = 4096


def parse_mapping(raw: str | None) -> dict[str, str]:
    """The column_mapping form field: a JSON object of strings (400 naming the field otherwise)."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > _MAX_MAPPING_CHARS:
        raise invalid(["body", "column_mapping"], f"must be at most {_MAX_MAPPING_CHARS} characters")
    try:
        value = json.loads(raw)
    except ValueError:
        raise invalid(["body", "column_mapping"], "must be a JSON object of field -> column names") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid(["body", "column_mapping"], "must be a JSON object of field -> column names") from None
    return value


def upload_reply(dataset: registry_pb2.Dataset) -> UploadDatasetResponse:
    return UploadDatasetResponse(
        filename=dataset.filename,
        num_examples=dataset.num_examples,
        validation=DatasetValidation(valid=dataset.valid, errors=[issue_text(i) for i in dataset.issues]),
    )


@router.post("/api/upload_dataset", response_model=UploadDatasetResponse)
async def upload_dataset(
    file: UploadFile,
    registry: RegistryStub,
    rpc: Rpc,
    settings: SettingsDep,
    column_mapping: Annotated[str | None, Form(description=MAPPING_DESCRIPTION)] = None,
) -> UploadDatasetResponse:
    """A .jsonl, .json (an array of objects), .csv (a header row) or .parquet file, stored as JSONL
    under the file's name with a .jsonl suffix. 400 naming the file's row (or line) and column."""
    filename = upload_filename(file)
    mapping = parse_mapping(column_mapping)
    # The multipart parser has spooled the file already, so its size is known before streaming.
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise ApiError(413, f"Dataset is larger than the limit of {settings.max_upload_bytes // (1024 * 1024)} MiB")
    messages = upload_messages(filename, file, settings.upload_chunk_bytes, mapping)
    reply = await registry.UploadDataset(messages, **rpc.write)
    return upload_reply(reply.dataset)


# Names as the Hub spells them: letters and digits joined by single separators (no "..").
_NAME = r"^[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*$"
_REVISION = r"^$|^[A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)*$"
# The fields a column mapping may map to (modelforge_common.dataset_rows.mappable_fields).
MappableField = Literal[
    "answers", "chosen", "completion", "context", "document", "input", "instruction", "messages", "output",
    "prompt", "question", "rejected", "summary", "text",
]


class HubDatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(
        max_length=HUB_REPO_NAME_MAX_LENGTH, pattern=HUB_REPO_NAME, description='A Hub dataset id, "name" or "org/name"'
    )
    config: str = Field(default="", max_length=64, pattern=rf"^$|{_NAME}", description="Config (subset) name")
    split: str = Field(default="train", min_length=1, max_length=64, pattern=_NAME)
    revision: str = Field(default="", max_length=200, pattern=_REVISION, description="Branch, tag or commit")
    column_mapping: dict[MappableField, Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]] = Field(
        default_factory=dict, description=MAPPING_DESCRIPTION
    )


@router.post("/api/hub/datasets", response_model=HubDatasetResponse)
async def register_hub_dataset(body: HubDatasetRequest, registry: RegistryStub, rpc: Rpc) -> HubDatasetResponse:
    """Stores one split of a Hub dataset as a dataset (fetched once by the registry with the server's
    token; the revision and its commit sha are kept in `dataset.source`). 503 when the Hub cannot be
    reached and the split is not cached; 404 for an unknown dataset, revision, config or split."""
    request = registry_pb2.RegisterHubDatasetRequest(
        repo_id=body.repo_id,
        config=body.config,
        split=body.split,
        revision=body.revision,
        column_mapping=body.column_mapping,
    )
    # A first fetch downloads the split: the long deadline of a Hub transfer.
    reply = await registry.RegisterHubDataset(request, **rpc.push)
    return HubDatasetResponse(
        **upload_reply(reply.dataset).model_dump(), dataset=DatasetSummary(**dataset_summary(reply.dataset))
    )


# What the registry stores an upload as (sanitized, .jsonl): anything else cannot name a dataset.
DatasetNamePath = Path(
    min_length=7, max_length=200, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.jsonl$", description="An uploaded filename"
)


@router.delete("/api/datasets/{name}", response_model=DeleteDatasetResponse)
async def delete_dataset(registry: RegistryStub, rpc: Rpc, name: str = DatasetNamePath) -> DeleteDatasetResponse:
    """Deletes an uploaded dataset (its row and file). 404 for an unknown name; 409 while a queued or
    running job uses it."""
    reply = await registry.DeleteDataset(registry_pb2.DeleteDatasetRequest(name=name), **rpc.write)
    filename = reply.dataset.filename or name
    return DeleteDatasetResponse(message=f"Dataset {filename} deleted successfully", filename=filename)


@router.get("/api/datasets", response_model=DatasetsResponse)
async def list_datasets(registry: RegistryStub, rpc: Rpc) -> DatasetsResponse:
    reply = await registry.ListDatasets(registry_pb2.ListDatasetsRequest(), **rpc.read)
    return DatasetsResponse(datasets=[DatasetSummary(**dataset_summary(d)) for d in reply.datasets])


class TokenLengths(BaseModel):
    # A field of the rows, or "total": a whole row as the model sees it.
    field: str
    min: int
    p50: int
    p95: int
    max: int
    mean: float
    rows: int


class DatasetInsightResponse(BaseModel):
    dataset: str
    model_name: str
    rows: int
    max_length: int
    fields: list[TokenLengths]
    # Rows longer than max_length tokens: training truncates them.
    rows_over_max_length: int
    duplicate_rows: int
    # Field -> rows where it is missing or blank.
    empty_fields: dict[str, int]
    # The first rows as the model sees them (chat template applied when the tokenizer has one).
    samples: list[str]
    # Every row's total length in tokens, in row order (the console draws its histogram).
    total_lengths: list[int]
    chat_template: bool


@router.get("/api/datasets/{name}/insight", response_model=DatasetInsightResponse)
async def dataset_insight(
    trainer: TrainerStub,
    rpc: Rpc,
    name: str = DatasetNamePath,
    model: str = Query(min_length=1, max_length=500, description="Base model: a Hub id or a local model folder"),
    max_length: int = Query(default=2048, ge=1, le=1_000_000, description="Tokens a row may have before truncation"),
    sample_size: int = Query(default=3, ge=1, le=20, description="Rows to show as the model sees them"),
) -> DatasetInsightResponse:
    """The dataset as the base model's tokenizer sees it: token lengths per field (min, p50, p95,
    max), rows over max_length, duplicates, empty fields and sample rows. 404 for an unknown dataset,
    400 naming model for an unusable model, 503 when its tokenizer is on an unreachable Hub."""
    request = trainer_pb2.InspectDatasetRequest(
        dataset=name, model_name=model, max_length=max_length, sample_size=sample_size
    )
    # Loading a tokenizer (maybe from the Hub) and reading every row takes longer than a plain read.
    reply = await trainer.InspectDataset(request, **rpc.generate)
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
