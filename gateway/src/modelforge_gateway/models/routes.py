"""Registered models. GET /api/models answers rest-api.md's envelope (plus filters, paging and a
total), GET /api/models/ (trailing slash, as responses.md writes it) the bare list; both paths are
registered so neither redirects. Lineage: GET /api/models/{id}/lineage."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter

from modelforge_common.catalog import TASKS
from modelforge_gateway.clients import CallOptions, RegistryClient
from modelforge_gateway.common.body import invalid_choice_message
from modelforge_gateway.common.job_records import JobStatusWord
from modelforge_gateway.common.model_records import (
    ModelDetails,
    ModelSummary,
    model_details,
    model_lineage,
    model_summary,
)
from modelforge_gateway.common.paths import ModelIdPath, TaskPath
from modelforge_gateway.deps import InferenceStub, ModelListingsDep, ModelLookupsDep, RegistryStub, Rpc
from modelforge_gateway.errors import ApiError, invalid, rpc_messages
from modelforge_gateway.models.convert import lineage_response, list_request
from modelforge_gateway.models.models import DeleteModelResponse, ModelLineageResponse, ModelsResponse
from modelforge_gateway.readcache import ModelListings, bare_listing_key, details_key, listing_key
from modelforge_gateway.rendered import RenderedBodies
from modelforge_gateway.upstream.models import (
    delete_registered_model,
    fetch_model,
    list_registered_models,
    not_found,
    unload_from_inference,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["models"])

SUMMARY_LIST = TypeAdapter(list[ModelSummary])


async def _list(
    registry: RegistryClient, rpc: CallOptions, listings: ModelListings, task: str = ""
) -> Response:
    """The bare list (responses.md), through the listing cache like GET /api/models."""

    async def ask_registry() -> bytes:
        models = await list_registered_models(registry, rpc, task)
        return SUMMARY_LIST.dump_json([model_summary(m) for m in models], by_alias=True)

    return Response(await listings.get(bare_listing_key(task), ask_registry), media_type="application/json")


def filter_query(description: str, max_length: int) -> Any:
    """An exact-match filter as the registry's column holds it: at most its length, no NUL."""
    # One Query object per parameter: FastAPI keeps per-parameter state on it.
    return Query(None, min_length=1, max_length=max_length, pattern=r"^[^\x00]*$", description=description)


@router.get("/api/models", response_model=ModelsResponse)
async def list_models(
    registry: RegistryStub,
    rpc: Rpc,
    listings: ModelListingsDep,
    task: str | None = filter_query("Task the model was trained for", 64),
    base_model: str | None = filter_query("Base model id or path", 512),
    strategy: str | None = filter_query("Training strategy", 64),
    provider: str | None = filter_query("Training provider", 64),
    status: JobStatusWord | None = Query(None, description="Final status of the job that produced the model"),
    limit: int | None = Query(None, ge=1, le=1000, description="Page size (default: every match)"),
    offset: int = Query(0, ge=0, le=2**31 - 1),
) -> Response:
    """Newest first; each given filter must match exactly. Listings are shared by concurrent reads
    and reused for at most MODELFORGE_MODELS_CACHE_S (readcache.ModelListings)."""
    request = list_request(task, base_model, strategy, provider, status, limit, offset)

    async def ask_registry() -> bytes:
        reply = await registry.ListModels(request, **rpc.read)
        models = [model_summary(m) for m in reply.models]
        return ModelsResponse(models=models, total=reply.total).model_dump_json(by_alias=True).encode()

    key = listing_key(task, base_model, strategy, provider, status, limit, offset)
    return Response(await listings.get(key, ask_registry), media_type="application/json")


@router.get("/api/models/", response_model=list[ModelSummary])
async def list_models_bare(registry: RegistryStub, rpc: Rpc, listings: ModelListingsDep) -> Response:
    return await _list(registry, rpc, listings)


@router.get("/api/models/task/{task}", response_model=list[ModelSummary])
async def list_models_for_task(
    task: TaskPath, registry: RegistryStub, rpc: Rpc, listings: ModelListingsDep
) -> Response:
    if task not in TASKS:
        raise invalid(["path", "task"], invalid_choice_message("task", task, TASKS))
    return await _list(registry, rpc, listings, task)


# Model details bodies by content (see rendered.py): the same model read again costs no conversion.
DETAILS_BODIES = RenderedBodies()


@router.get("/api/models/{model_id}", response_model=ModelDetails)
async def get_model(
    registry: RegistryStub, rpc: Rpc, listings: ModelListingsDep, model_id: str = ModelIdPath
) -> Response:
    """Shared by concurrent reads and reused for at most MODELFORGE_MODELS_CACHE_S, like the listings
    (readcache.ModelListings: the same writes and events invalidate it); a 404 is never kept."""

    async def ask_registry() -> bytes:
        model = await fetch_model(registry, rpc, model_id)
        return DETAILS_BODIES.body(model, lambda: model_details(model))

    return Response(await listings.get(details_key(model_id), ask_registry), media_type="application/json")


@router.get("/api/models/{model_id}/lineage", response_model=ModelLineageResponse)
async def get_model_lineage(registry: RegistryStub, rpc: Rpc, model_id: str = ModelIdPath) -> ModelLineageResponse:
    """404 for a model registered without lineage (e.g. imported, not trained here)."""
    model = await fetch_model(registry, rpc, model_id)
    lineage = model_lineage(model)
    if lineage is None:
        raise ApiError(404, f"Model {model_id} has no lineage: it was not trained by ModelForge")
    return lineage_response(model, lineage)


@router.delete("/api/models/{model_id}", response_model=DeleteModelResponse)
async def delete_model(
    registry: RegistryStub,
    inference: InferenceStub,
    rpc: Rpc,
    lookups: ModelLookupsDep,
    model_id: str = ModelIdPath,
) -> DeleteModelResponse:
    """Deletes the row and files (registry), then asks inference to drop the model from its cache;
    that second step is best effort: the model is gone whatever inference answers."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: not_found(model_id)}):
        deleted = await delete_registered_model(registry, rpc, model_id)
    # After the registry's answer: a lookup started before it cannot store the deleted model.
    lookups.invalidate()
    deleted_id = deleted.model_id or model_id
    try:
        await unload_from_inference(inference, rpc, deleted_id)
    except grpc.aio.AioRpcError as exc:
        log.warning("inference did not unload deleted model %s: %s %s", deleted_id, exc.code().name, exc.details())
    return DeleteModelResponse(message=f"Model {deleted_id} deleted successfully", model_id=deleted_id)
