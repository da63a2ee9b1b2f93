"""rest-api.md training endpoints: start, status, stop."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, Query, Response

from modelforge_gateway.common.job_records import NOTHING_RUNS
from modelforge_gateway.common.training_params import StartTrainingRequest
from modelforge_gateway.deps import RegistryStub, Rpc, StatusViewDep, TrainerStub
from modelforge_gateway.errors import rpc_messages
from modelforge_gateway.readcache import TrainerAnswer
from modelforge_gateway.training.convert import stop_answer, training_status
from modelforge_gateway.training.models import StartTrainingResponse, StopTrainingResponse, TrainingStatusResponse
from modelforge_gateway.upstream.datasets import check_dataset_digest
from modelforge_gateway.upstream.jobs import job_not_found, start_job, stop_job, trainer_status

router = APIRouter(tags=["training"])


@router.post("/api/start_training", response_model=StartTrainingResponse)
async def start_training(
    body: StartTrainingRequest, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc
) -> StartTrainingResponse:
    await check_dataset_digest(registry, rpc, body.dataset, body.dataset_sha256)
    job = await start_job(trainer, rpc, body.to_pb(body.task, body.model_name))
    return StartTrainingResponse(job_id=job.job_id)


@router.get("/api/training_status", response_model=TrainingStatusResponse)
async def get_training_status(
    trainer: TrainerStub, rpc: Rpc, view: StatusViewDep, job_id: str = Query("", max_length=200)
) -> Response:
    """The trainer's answer, shared by concurrent reads and reused for at most
    MODELFORGE_STATUS_CACHE_S, with newer training events over it (readcache.TrainingStatusView)."""

    async def ask_trainer() -> TrainerAnswer:
        reply = await trainer_status(trainer, rpc, job_id)
        fields = training_status(reply.has_job, reply.job).model_dump(mode="json")
        return TrainerAnswer(fields, reply.job.last_seq if reply.has_job else 0)

    messages = {grpc.StatusCode.NOT_FOUND: job_not_found(job_id)} if job_id else {}
    with rpc_messages(messages):
        body = await view.body(job_id, ask_trainer)
    return Response(body, media_type="application/json")


@router.post("/api/stop_training", response_model=StopTrainingResponse)
async def stop_training(
    trainer: TrainerStub, rpc: Rpc, job_id: str = Query("", max_length=200)
) -> StopTrainingResponse:
    """409 when nothing runs (or the named job has finished); 404 for an unknown job_id."""
    # Without a job id, "no current job" is a state conflict whichever code the trainer chose.
    not_found = job_not_found(job_id) if job_id else (409, NOTHING_RUNS)
    with rpc_messages({grpc.StatusCode.NOT_FOUND: not_found}):
        job = await stop_job(trainer, rpc, job_id)
    return stop_answer(job)
