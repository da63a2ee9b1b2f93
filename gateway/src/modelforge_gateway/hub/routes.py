"""Shipping a model: push to the Hugging Face Hub (responses.md's POST /api/hub/push) and merging a
LoRA adapter into its base as a new registered model (POST /api/models/{id}/merge).

Both look the model up in the registry and hand inference a ModelRef, so no client-supplied path is
ever read or written. The Hub token is inference-svc's own setting: no request carries it and no
answer shows it.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from fastapi import APIRouter

from modelforge_gateway.clients import CallOptions, RegistryClient
from modelforge_gateway.common.paths import ModelIdPath
from modelforge_gateway.deps import InferenceStub, RegistryStub, Rpc
from modelforge_gateway.errors import ApiError
from modelforge_gateway.hub.convert import (
    discard_request,
    merge_request,
    merged_answer,
    merged_record,
    push_answer,
    push_request,
    register_request,
)
from modelforge_gateway.hub.models import HubPushRequest, HubPushResponse, MergedModelResponse, MergeRequest
from modelforge_gateway.upstream.models import fetch_model, list_registered_models

log = logging.getLogger(__name__)

router = APIRouter(tags=["hub"])


@router.post("/api/hub/push", response_model=HubPushResponse)
async def push(body: HubPushRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc) -> HubPushResponse:
    model = await fetch_model(registry, rpc, body.model_id)
    reply = await inference.PushToHub(push_request(model, body), **rpc.push)
    return push_answer(reply)


async def name_taken(registry: RegistryClient, rpc: CallOptions, name: str) -> bool:
    """Whether a registered model already has this name (the registry refuses a second one)."""
    return any(model.name == name for model in await list_registered_models(registry, rpc))


async def discard_folder(registry: RegistryClient, rpc: CallOptions, path: str) -> None:
    """Best effort: the registry removes what a failed merge wrote (registry-svc owns deletion). If
    it cannot now, its start-up sweep removes the unregistered folder later."""
    try:
        await registry.DiscardModelFolder(discard_request(path), **rpc.write)
    except grpc.aio.AioRpcError as exc:
        log.warning("could not remove the folder %s of a failed merge: %s %s", path, exc.code().name, exc.details())


@router.post(
    "/api/models/{model_id}/merge",
    response_model=MergedModelResponse,
    status_code=201,
    responses={409: {"description": "The name is taken, or the model has full weights already"}},
)
async def merge(
    registry: RegistryStub,
    inference: InferenceStub,
    rpc: Rpc,
    body: MergeRequest | None = None,
    model_id: str = ModelIdPath,
) -> MergedModelResponse:
    """Writes the adapter merged into its base as a new registered model. The name is checked
    before the (long) merge; if the merge or the registration fails, the merged folder is removed."""
    source = await fetch_model(registry, rpc, model_id)
    if source.adapter_type == "full":
        raise ApiError(409, f"Model {source.model_id} already has full weights; only LoRA adapters are merged")
    name = body.name if body and body.name else f"{source.name}-merged"
    if await name_taken(registry, rpc, name):
        raise ApiError(409, f"Model name '{name}' is already taken")
    # A fresh folder under models/, the merge's own.
    output_path = f"models/{source.model_id}-merged-{uuid.uuid4().hex[:8]}"
    try:
        merged = await inference.MergeAdapter(merge_request(source, output_path), **rpc.merge)
        record = merged_record(source, name, merged)
        reply = await registry.RegisterModel(register_request(record), **rpc.write)
    except grpc.aio.AioRpcError:
        # A merge that failed part way may have written some of the folder; a failed registration
        # leaves all of it. Either way nothing refers to it.
        await discard_folder(registry, rpc, output_path)
        raise
    return merged_answer(reply.model, source)
