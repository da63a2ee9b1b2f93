"""Datasets as several slices need them: list, delete, and the digest check behind a pinned start
request."""

from __future__ import annotations

import grpc

from modelforge.v1 import registry_pb2
from modelforge_gateway.clients import CallOptions, RegistryClient
from modelforge_gateway.errors import ApiError


async def check_dataset_digest(
    registry: RegistryClient, rpc: CallOptions, dataset: str, expected_sha256: str | None
) -> None:
    """409 when start_training pins a dataset digest the stored dataset no longer has. Done here, not
    in trainer-svc: the gateway resolves the dataset with the registry anyway, and the trainer's
    request message stays as it is. An unknown dataset is left to the trainer, which reports it the
    way it always does."""
    if not expected_sha256:
        return
    try:
        reply = await registry.GetDataset(registry_pb2.GetDatasetRequest(name=dataset), **rpc.read)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return
        raise
    stored = reply.dataset.sha256
    if stored != expected_sha256:
        raise ApiError(
            409,
            f"Dataset {dataset} does not match dataset_sha256: the run asks for {expected_sha256}, "
            f"the stored file has {stored}",
        )


async def list_stored_datasets(registry: RegistryClient, rpc: CallOptions) -> list[registry_pb2.Dataset]:
    reply = await registry.ListDatasets(registry_pb2.ListDatasetsRequest(), **rpc.read)
    return list(reply.datasets)


async def delete_stored_dataset(
    registry: RegistryClient, rpc: CallOptions, name: str
) -> registry_pb2.DeleteDatasetResponse:
    """Errors as the registry sent them, for the caller to word."""
    return await registry.DeleteDataset(registry_pb2.DeleteDatasetRequest(name=name), **rpc.write)
