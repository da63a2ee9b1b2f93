"""The v1 wizard (responses.md "Training Endpoints"), served under /api/finetune.

Wizard state (task, selected model) lives in registry-svc, keyed by the client's session id, so
any gateway replica can answer any step.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import APIRouter

from modelforge.v1 import registry_pb2
from modelforge_common.catalog import TASKS
from modelforge_common.grpc_client import violations_of
from modelforge_gateway.clients import CallOptions, RegistryClient
from modelforge_gateway.common.body import invalid_choice_message
from modelforge_gateway.common.paths import TaskPath
from modelforge_gateway.deps import HardwareStub, RegistryStub, Rpc, SessionId, TrainerStub
from modelforge_gateway.errors import ApiError, invalid, rpc_messages, violation_items
from modelforge_gateway.finetune import convert
from modelforge_gateway.finetune.models import (
    DetectResponse,
    HardwareSpecsResponse,
    MemoryEstimateRequest,
    MemoryEstimateResponse,
    ModelInfo,
    RecommendedModelsResponse,
    RepoRequest,
    SelectedModelRequest,
    SessionResponse,
    SetCustomModelResponse,
    SetModelResponse,
    SuccessResponse,
    TaskRequest,
    TrainingSettingsResponse,
    ValidateCustomModelResponse,
    ValidateModelResponse,
    ValidateTaskResponse,
    WizardStartTrainingRequest,
    WizardStartTrainingResponse,
    WizardStatusResponse,
)
from modelforge_gateway.upstream.hardware import hardware_info, task_recommendations
from modelforge_gateway.upstream.jobs import start_job, trainer_status

router = APIRouter(prefix="/api/finetune", tags=["finetune (v1 wizard)"])

# load_settings for a session that has not picked a task yet.
DEFAULT_TASK = "text-generation"


def not_accessible(repo_name: str) -> str:
    return f"Model {repo_name} is not accessible. Please check if it exists and you have permissions."


async def read_session(
    registry: RegistryClient, rpc: CallOptions, session_id: str
) -> registry_pb2.Session:
    """The session's state; an unknown session is an empty one, not an error."""
    try:
        reply = await registry.GetSession(convert.session_request(session_id), **rpc.read)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return convert.empty_session(session_id)
        raise
    return reply.session


async def update_session(
    registry: RegistryClient, rpc: CallOptions, session_id: str, **fields: Any
) -> registry_pb2.Session:
    reply = await registry.UpdateSession(convert.update_session_request(session_id, fields), **rpc.write)
    return reply.session


async def describe(hardware: HardwareStub, rpc: CallOptions, repo_name: str) -> ModelInfo:
    """DescribeModel with the spec's 403 for a model that is missing or gated; 503 when the Hub
    cannot be reached (the service's UNAVAILABLE)."""
    denied = (403, not_accessible(repo_name))
    try:
        with rpc_messages({grpc.StatusCode.PERMISSION_DENIED: denied, grpc.StatusCode.NOT_FOUND: denied}):
            reply = await hardware.DescribeModel(convert.describe_request(repo_name), **rpc.hub)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
            raise
        # DescribeModel calls it model_name; this request's field is repo_name.
        items = violation_items(violations_of(exc)) or [{"loc": ["body"], "msg": exc.details(), "type": "value_error"}]
        raise ApiError(400, [{**item, "loc": ["body", "repo_name", *item["loc"][2:]]} for item in items]) from exc
    return convert.describe_model(reply)


@router.post("/validate_task", response_model=ValidateTaskResponse)
async def validate_task(body: TaskRequest) -> ValidateTaskResponse:
    return ValidateTaskResponse(task=body.task)


@router.post("/validate_model", response_model=ValidateModelResponse)
async def validate_model(body: SelectedModelRequest) -> ValidateModelResponse:
    return ValidateModelResponse(model=body.selected_model)


@router.post("/validate_custom_model", response_model=ValidateCustomModelResponse)
async def validate_custom_model(body: RepoRequest, hardware: HardwareStub, rpc: Rpc) -> ValidateCustomModelResponse:
    info = await describe(hardware, rpc, body.repo_name)
    return ValidateCustomModelResponse(repo_name=body.repo_name, model_info=info)


@router.post("/detect", response_model=DetectResponse)
async def detect(
    body: TaskRequest, hardware: HardwareStub, registry: RegistryStub, rpc: Rpc, session_id: SessionId
) -> DetectResponse:
    recommendations = await task_recommendations(hardware, rpc, body.task)
    if recommendations.HasField("hardware"):
        info = recommendations.hardware
    else:
        info = await hardware_info(hardware, rpc)
    await update_session(registry, rpc, session_id, task=body.task)
    return convert.detect(body.task, recommendations, info)


@router.post("/set_model", response_model=SetModelResponse)
async def set_model(
    body: SelectedModelRequest, registry: RegistryStub, rpc: Rpc, session_id: SessionId
) -> SetModelResponse:
    session = await update_session(registry, rpc, session_id, selected_model=body.selected_model, is_custom_model=False)
    return SetModelResponse(selected_model=session.selected_model or body.selected_model)


@router.post("/set_custom_model", response_model=SetCustomModelResponse)
async def set_custom_model(
    body: RepoRequest, hardware: HardwareStub, registry: RegistryStub, rpc: Rpc, session_id: SessionId
) -> SetCustomModelResponse:
    await describe(hardware, rpc, body.repo_name)
    await update_session(registry, rpc, session_id, selected_model=body.repo_name, is_custom_model=True)
    return SetCustomModelResponse(selected_model=body.repo_name, repo_name=body.repo_name)


@router.get("/session", response_model=SessionResponse)
async def session(registry: RegistryStub, rpc: Rpc, session_id: SessionId) -> SessionResponse:
    state = await read_session(registry, rpc, session_id)
    return SessionResponse(
        task=state.task or None,
        selected_model=state.selected_model or None,
        is_custom_model=state.is_custom_model,
    )


@router.get("/load_settings", response_model=TrainingSettingsResponse)
async def load_settings(
    hardware: HardwareStub, registry: RegistryStub, rpc: Rpc, session_id: SessionId
) -> TrainingSettingsResponse:
    """Hardware-based defaults for the session's task (text-generation before one is chosen)."""
    state = await read_session(registry, rpc, session_id)
    task = state.task or DEFAULT_TASK
    reply = await task_recommendations(hardware, rpc, task)
    return convert.training_defaults(reply.defaults)


@router.post("/start_training", response_model=WizardStartTrainingResponse)
async def start_training(
    body: WizardStartTrainingRequest, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc, session_id: SessionId
) -> WizardStartTrainingResponse:
    task, model_name = body.task, body.model_name
    if not task or not model_name:
        state = await read_session(registry, rpc, session_id)
        task = task or state.task or None
        model_name = model_name or state.selected_model or None
    missing = [name for name, value in (("task", task), ("model_name", model_name)) if not value]
    if missing:
        detail = [
            {"loc": ["body", name], "msg": "Field required (and none chosen in the wizard session)", "type": "missing"}
            for name in missing
        ]
        raise ApiError(400, detail)
    assert task is not None and model_name is not None
    job = await start_job(trainer, rpc, body.to_pb(task, model_name))
    return WizardStartTrainingResponse(job_id=job.job_id)


@router.get("/status", response_model=WizardStatusResponse)
async def status(trainer: TrainerStub, rpc: Rpc) -> WizardStatusResponse:
    reply = await trainer_status(trainer, rpc)
    return convert.wizard_status(reply.has_job, reply.job)


@router.post("/reset_status", response_model=SuccessResponse)
async def reset_status(trainer: TrainerStub, rpc: Rpc) -> SuccessResponse:
    await trainer.ResetTrainingStatus(convert.reset_status_request(), **rpc.write)
    return SuccessResponse(message="Training status reset successfully")


@router.get("/hardware_specs", response_model=HardwareSpecsResponse)
async def hardware_specs(hardware: HardwareStub, rpc: Rpc) -> HardwareSpecsResponse:
    return convert.hardware_specs(await hardware_info(hardware, rpc))


@router.get("/recommended_models/{task}", response_model=RecommendedModelsResponse)
async def recommended_models(task: TaskPath, hardware: HardwareStub, rpc: Rpc) -> RecommendedModelsResponse:
    if task not in TASKS:
        raise invalid(["path", "task"], invalid_choice_message("task", task, TASKS))
    reply = await task_recommendations(hardware, rpc, task)
    return RecommendedModelsResponse(
        task=task,
        recommended_model=reply.recommended_model,
        possible_models=list(reply.possible_models),
        compute_profile=reply.profile,
    )


@router.post("/estimate_memory", response_model=MemoryEstimateResponse)
async def estimate_memory(body: MemoryEstimateRequest, hardware: HardwareStub, rpc: Rpc) -> MemoryEstimateResponse:
    request = convert.estimate_request(body)
    # config.json may come from the Hub, hence the longer deadline.
    reply = await hardware.EstimateMemory(request, **rpc.hub)
    return convert.memory_estimate(body.model_name, reply, body.world_size)
