"""Dataset upload (JSONL, JSON, CSV or Parquet, streamed to registry-svc in chunks, optionally with
a column mapping), registration of a Hub dataset split (POST /api/hub/datasets), listing, insight
and deletion."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, UploadFile

from modelforge_gateway.common.uploads import upload_filename
from modelforge_gateway.datasets.convert import (
    dataset_summary,
    hub_dataset_reply,
    hub_dataset_request,
    insight,
    insight_request,
    upload_messages,
    upload_reply,
)
from modelforge_gateway.datasets.models import (
    MAPPING_DESCRIPTION,
    DatasetInsightResponse,
    DatasetsResponse,
    DeleteDatasetResponse,
    HubDatasetRequest,
    HubDatasetResponse,
    UploadDatasetResponse,
)
from modelforge_gateway.deps import RegistryStub, Rpc, SettingsDep, TrainerStub
from modelforge_gateway.errors import ApiError, invalid
from modelforge_gateway.upstream.datasets import delete_stored_dataset, list_stored_datasets

router = APIRouter(tags=["datasets"])

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


@router.post("/api/hub/datasets", response_model=HubDatasetResponse)
async def register_hub_dataset(body: HubDatasetRequest, registry: RegistryStub, rpc: Rpc) -> HubDatasetResponse:
    """Stores one split of a Hub dataset as a dataset (fetched once by the registry with the server's
    token; the revision and its commit sha are kept in `dataset.source`). 503 when the Hub cannot be
    reached and the split is not cached; 404 for an unknown dataset, revision, config or split."""
    # A first fetch downloads the split: the long deadline of a Hub transfer.
    reply = await registry.RegisterHubDataset(hub_dataset_request(body), **rpc.push)
    return hub_dataset_reply(reply.dataset)


# What the registry stores an upload as (sanitized, .jsonl): anything else cannot name a dataset.
DatasetNamePath = Path(
    min_length=7, max_length=200, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.jsonl$", description="An uploaded filename"
)


@router.delete("/api/datasets/{name}", response_model=DeleteDatasetResponse)
async def delete_dataset(registry: RegistryStub, rpc: Rpc, name: str = DatasetNamePath) -> DeleteDatasetResponse:
    """Deletes an uploaded dataset (its row and file). 404 for an unknown name; 409 while a queued or
    running job uses it."""
    reply = await delete_stored_dataset(registry, rpc, name)
    filename = reply.dataset.filename or name
    return DeleteDatasetResponse(message=f"Dataset {filename} deleted successfully", filename=filename)


@router.get("/api/datasets", response_model=DatasetsResponse)
async def list_datasets(registry: RegistryStub, rpc: Rpc) -> DatasetsResponse:
    return DatasetsResponse(datasets=[dataset_summary(d) for d in await list_stored_datasets(registry, rpc)])


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
    request = insight_request(name, model, max_length, sample_size)
    # Loading a tokenizer (maybe from the Hub) and reading every row takes longer than a plain read.
    reply = await trainer.InspectDataset(request, **rpc.generate)
    return insight(reply)
