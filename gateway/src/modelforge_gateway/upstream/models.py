"""Registered models: look one up (404 "Model <x> not found"), list, delete and unload them, and the
ModelRef inference gets."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import grpc

from modelforge.v1 import inference_pb2, registry_pb2
from modelforge_gateway.clients import CallOptions, InferenceClient, RegistryClient
from modelforge_gateway.errors import rpc_messages
from modelforge_gateway.readcache import ModelLookups


def not_found(model_id: str) -> str:
    return f"Model {model_id} not found"


async def fetch_model(
    registry: RegistryClient, rpc: CallOptions, model_id: str
) -> registry_pb2.Model:
    """The registered model by numeric id or model_id; 404 "Model <x> not found" otherwise."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: not_found(model_id)}):
        reply = await registry.GetModel(registry_pb2.GetModelRequest(id=model_id), **rpc.read)
    return reply.model


async def list_registered_models(
    registry: RegistryClient, rpc: CallOptions, task: str = ""
) -> list[registry_pb2.Model]:
    """Every registered model (of one task when given)."""
    reply = await registry.ListModels(registry_pb2.ListModelsRequest(task=task), **rpc.read)
    return list(reply.models)


async def delete_registered_model(registry: RegistryClient, rpc: CallOptions, model_id: str) -> registry_pb2.Model:
    """Deletes a registered model (numeric id or model_id); errors as the registry sent them. The
    caller invalidates the lookups (readcache.ModelLookups)."""
    reply = await registry.DeleteModel(registry_pb2.DeleteModelRequest(id=model_id), **rpc.write)
    return reply.model


async def unload_from_inference(inference: InferenceClient, rpc: CallOptions, model_id: str) -> None:
    await inference.UnloadModel(inference_pb2.UnloadModelRequest(model_id=model_id), **rpc.read)


async def registered_model_or_none(
    registry: RegistryClient, rpc: CallOptions, model_id: str
) -> registry_pb2.Model | None:
    """The registered model, uncached; None for "" or a model the registry does not have (deleted
    since: a job keeps its history)."""
    if not model_id:
        return None
    try:
        return (await registry.GetModel(registry_pb2.GetModelRequest(id=model_id), **rpc.read)).model
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise


def model_ref(model: registry_pb2.Model) -> inference_pb2.ModelRef:
    """What inference loads: the registry's path and hashes, never a client-supplied path."""
    return inference_pb2.ModelRef(
        model_id=model.model_id,
        base_model=model.base_model,
        path=model.path,
        task=model.task,
        adapter_type=model.adapter_type,
        file_sha256=dict(model.file_sha256),
    )


@dataclass(frozen=True)
class ServedModel:
    """A model as generation needs it: its ModelRef built once per lookup, not once per request.
    Shared by every request served from the cache: read it, never change it."""

    model_id: str
    ref: inference_pb2.ModelRef


def _lookup(
    registry: RegistryClient, rpc: CallOptions, lookups: ModelLookups[ServedModel], model_id: str
) -> Awaitable[ServedModel]:
    async def ask_registry() -> ServedModel:
        reply = await registry.GetModel(registry_pb2.GetModelRequest(id=model_id), **rpc.read)
        return ServedModel(model_id=reply.model.model_id, ref=model_ref(reply.model))

    return lookups.get(model_id, ask_registry)


async def serving_model(
    registry: RegistryClient,
    rpc: CallOptions,
    lookups: ModelLookups[ServedModel],
    model_id: str,
) -> ServedModel:
    """fetch_model through the per-replica lookup cache (readcache.ModelLookups)."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: not_found(model_id)}):
        return await _lookup(registry, rpc, lookups, model_id)


async def serving_model_or_none(
    registry: RegistryClient,
    rpc: CallOptions,
    lookups: ModelLookups[ServedModel],
    model_id: str,
) -> ServedModel | None:
    """serving_model for callers with their own error shape (/v1): None when no such model is
    registered (a miss is not kept, so a model registered since is found next time)."""
    try:
        return await _lookup(registry, rpc, lookups, model_id)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise
