"""The jobs API beside the seed endpoints: queue a job, list, read, cancel (its events: the events
slice)."""

from __future__ import annotations

from typing import Annotated

import grpc
from fastapi import APIRouter, Header, Path, Query, Response

from modelforge_gateway.common.job_records import JobStatusWord
from modelforge_gateway.common.training_params import StartTrainingRequest
from modelforge_gateway.deps import Owner, RegistryStub, Rpc, TrainerStub
from modelforge_gateway.errors import rpc_messages
from modelforge_gateway.jobs.convert import job_response, list_request, submit_request
from modelforge_gateway.jobs.models import JobListResponse, JobResponse
from modelforge_gateway.upstream.datasets import check_dataset_digest
from modelforge_gateway.upstream.jobs import checked_job_id, fetch_job, job_not_found, stop_job

router = APIRouter(tags=["jobs"])

IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"  # printable ASCII, no spaces

JobId = Annotated[str, Path(max_length=128)]


@router.post(
    "/api/jobs",
    response_model=JobResponse,
    status_code=201,
    responses={200: {"model": JobResponse, "description": "The job this Idempotency-Key created before"}},
)
async def submit_job(
    body: StartTrainingRequest,
    trainer: TrainerStub,
    registry: RegistryStub,
    rpc: Rpc,
    owner: Owner,
    response: Response,
    idempotency_key: Annotated[str | None, Header(pattern=IDEMPOTENCY_KEY)] = None,
) -> JobResponse:
    """Queues a training job (any trainer replica with a free slot runs it). Repeating a request
    with the same `Idempotency-Key` header returns the job it created first, with 200."""
    await check_dataset_digest(registry, rpc, body.dataset, body.dataset_sha256)
    reply = await trainer.SubmitTrainingJob(submit_request(body, idempotency_key, owner), **rpc.write)
    if not reply.created:
        response.status_code = 200
    return job_response(reply.job)


@router.get("/api/jobs", response_model=JobListResponse)
async def list_jobs(
    trainer: TrainerStub,
    rpc: Rpc,
    status: Annotated[list[JobStatusWord] | None, Query(description="Only jobs in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobListResponse:
    reply = await trainer.ListTrainingJobs(list_request(status, limit, offset), **rpc.read)
    return JobListResponse(jobs=[job_response(job) for job in reply.jobs], total=reply.total)


@router.get("/api/jobs/{job_id}", response_model=JobResponse, responses={404: {"description": "Unknown job"}})
async def get_job(job_id: JobId, trainer: TrainerStub, rpc: Rpc) -> JobResponse:
    return job_response(await fetch_job(trainer, rpc, job_id))


@router.post(
    "/api/jobs/{job_id}/cancel",
    response_model=JobResponse,
    responses={404: {"description": "Unknown job"}, 409: {"description": "The job has already finished"}},
)
async def cancel_job(job_id: JobId, trainer: TrainerStub, rpc: Rpc) -> JobResponse:
    """Cancels a queued job at once; a running one stops at its next step (saving a checkpoint)."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: job_not_found(job_id)}):
        job = await stop_job(trainer, rpc, checked_job_id(job_id))
    return job_response(job)
