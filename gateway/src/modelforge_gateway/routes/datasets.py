"""Dataset upload (streamed to registry-svc in chunks), listing and deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePath

from fastapi import APIRouter, Path, UploadFile

from modelforge.v1 import registry_pb2
from modelforge_gateway.convert import dataset_summary, issue_text
from modelforge_gateway.deps import RegistryStub, Rpc, SettingsDep
from modelforge_gateway.errors import ApiError, invalid
from modelforge_gateway.schemas import (
    DatasetsResponse,
    DatasetSummary,
    DatasetValidation,
    DeleteDatasetResponse,
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
    filename: str, upload: UploadFile, chunk_bytes: int
) -> AsyncIterator[registry_pb2.UploadDatasetRequest]:
    """UploadDataset's request stream: the filename first, then the content in chunks."""
    yield registry_pb2.UploadDatasetRequest(filename=filename)
    while chunk := await upload.read(chunk_bytes):
        yield registry_pb2.UploadDatasetRequest(chunk=chunk)


@router.post("/api/upload_dataset", response_model=UploadDatasetResponse)
async def upload_dataset(
    file: UploadFile, registry: RegistryStub, rpc: Rpc, settings: SettingsDep
) -> UploadDatasetResponse:
    filename = upload_filename(file)
    # The multipart parser has spooled the file already, so its size is known before streaming.
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise ApiError(413, f"Dataset is larger than the limit of {settings.max_upload_bytes // (1024 * 1024)} MiB")
    messages = upload_messages(filename, file, settings.upload_chunk_bytes)
    reply = await registry.UploadDataset(messages, **rpc.write)
    dataset = reply.dataset
    return UploadDatasetResponse(
        filename=dataset.filename,
        num_examples=dataset.num_examples,
        validation=DatasetValidation(valid=dataset.valid, errors=[issue_text(i) for i in dataset.issues]),
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
