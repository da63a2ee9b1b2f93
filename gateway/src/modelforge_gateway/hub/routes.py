"""Shipping a model: push to the Hugging Face Hub (responses.md's POST /api/hub/push) and merging a
LoRA adapter into its base as a new registered model (POST /api/models/{id}/merge).

Both look the model up in the registry and hand inference a ModelRef, so no client-supplied path is
ever read or written. The Hub token is inference-svc's own setting: no request carries it and no
answer shows it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from modelforge.v1 import inference_pb2, registry_pb2, registry_pb2_grpc
from modelforge_gateway.clients import CallOptions
from modelforge_gateway.convert import model_details, model_ref
from modelforge_gateway.deps import InferenceStub, RegistryStub, Rpc
from modelforge_gateway.errors import ApiError
from modelforge_gateway.routes.models import ModelIdPath, fetch_model
from modelforge_gateway.schemas import ModelDetails

log = logging.getLogger(__name__)

router = APIRouter(tags=["hub"])


# A Hub repository id as the Hub accepts it: "name" or "namespace/name", letters and digits joined by
# single "-", "_" or "." (no "--" or "..", none at either end); 96 characters in all (the Hub allows
# 96 for the name alone).
_HUB_NAME_PART = r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*"
HUB_REPO_NAME = rf"^(?:{_HUB_NAME_PART}/)?{_HUB_NAME_PART}$"
HUB_REPO_NAME_MAX_LENGTH = 96


class HubPushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=300, description="Numeric id or model_id")
    repo_name: str = Field(
        max_length=HUB_REPO_NAME_MAX_LENGTH, pattern=HUB_REPO_NAME, description='"name" or "namespace/name"'
    )
    private: bool = False
    # Push the adapter merged into its base (standalone weights) instead of the adapter alone.
    merge: bool = False
    commit_message: str = Field(default="", max_length=500)


class HubPushResponse(BaseModel):
    success: bool = True
    message: str
    repo_url: str
    repo_id: str
    commit_url: str


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Name of the new registered model; default "<name>-merged".
    name: str | None = Field(default=None, min_length=1, max_length=200)


class MergedModelResponse(ModelDetails):
    merged_from: str


@router.post("/api/hub/push", response_model=HubPushResponse)
async def push(body: HubPushRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc) -> HubPushResponse:
    model = await fetch_model(registry, rpc, body.model_id)
    request = inference_pb2.PushToHubRequest(
        model=model_ref(model),
        repo_name=body.repo_name,
        private=body.private,
        merge=body.merge,
        commit_message=body.commit_message,
    )
    reply = await inference.PushToHub(request, **rpc.push)
    return HubPushResponse(
        message="Model pushed to HuggingFace Hub successfully",
        repo_url=reply.repo_url,
        repo_id=reply.repo_id,
        commit_url=reply.commit_url,
    )


async def name_taken(registry: registry_pb2_grpc.RegistryServiceStub, rpc: CallOptions, name: str) -> bool:
    """Whether a registered model already has this name (the registry refuses a second one)."""
    reply = await registry.ListModels(registry_pb2.ListModelsRequest(), **rpc.read)
    return any(model.name == name for model in reply.models)


async def discard_folder(registry: registry_pb2_grpc.RegistryServiceStub, rpc: CallOptions, path: str) -> None:
    """Best effort: the registry removes what a failed merge wrote (registry-svc owns deletion). If
    it cannot now, its start-up sweep removes the unregistered folder later."""
    try:
        await registry.DiscardModelFolder(registry_pb2.DiscardModelFolderRequest(path=path), **rpc.write)
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
        merged = await inference.MergeAdapter(
            inference_pb2.MergeAdapterRequest(model=model_ref(source), output_path=output_path), **rpc.merge
        )
        record = registry_pb2.Model(
            name=name,
            # The merged weights stand alone (adapter_type full loads from path); base_model keeps
            # what they were fine-tuned from.
            base_model=source.base_model,
            task=source.task,
            strategy=source.strategy,
            provider=source.provider,
            path=merged.path,
            config=source.config,
            training_params=source.training_params,
            metrics=source.metrics,
            job_id=source.job_id,
            adapter_type="full",
            file_sha256=merged.file_sha256,
            size_mb=merged.size_bytes / (1024 * 1024),
        )
        reply = await registry.RegisterModel(registry_pb2.RegisterModelRequest(model=record), **rpc.write)
    except grpc.aio.AioRpcError:
        # A merge that failed part way may have written some of the folder; a failed registration
        # leaves all of it. Either way nothing refers to it.
        await discard_folder(registry, rpc, output_path)
        raise
    details: dict[str, Any] = model_details(reply.model)
    return MergedModelResponse(**details, merged_from=source.model_id)
