"""Training jobs as several slices need them: start one, read one (by id, or the current one), stop one."""

from __future__ import annotations

import grpc

from modelforge.v1 import common_pb2, trainer_pb2
from modelforge_gateway.clients import CallOptions, TrainerClient
from modelforge_gateway.errors import ApiError, rpc_messages
from modelforge_gateway.replay import JOB_ID


def job_not_found(job_id: str) -> str:
    return f"Training job {job_id} not found"


async def start_job(
    trainer: TrainerClient, rpc: CallOptions, config: common_pb2.TrainingConfig
) -> common_pb2.TrainingJob:
    """The one trainer call behind both start endpoints; FAILED_PRECONDITION (a job runs) -> 409."""
    reply = await trainer.StartTraining(trainer_pb2.StartTrainingRequest(config=config), **rpc.write)
    return reply.job


def checked_job_id(job_id: str) -> str:
    """A job id the trainer could know; anything else is a 404 without asking it."""
    if not JOB_ID.match(job_id):
        raise ApiError(404, job_not_found(job_id))
    return job_id


async def fetch_job(
    trainer: TrainerClient, rpc: CallOptions, job_id: str
) -> common_pb2.TrainingJob:
    """The job of record by id; 404 "Training job <x> not found" otherwise."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: job_not_found(job_id)}):
        reply = await trainer_status(trainer, rpc, checked_job_id(job_id))
    return reply.job


async def trainer_status(
    trainer: TrainerClient, rpc: CallOptions, job_id: str = ""
) -> trainer_pb2.GetTrainingStatusResponse:
    """The trainer's answer about a job (the current, else most recent, one when job_id is "");
    errors as the trainer sent them, for the caller to word."""
    return await trainer.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(job_id=job_id), **rpc.read)


async def stop_job(trainer: TrainerClient, rpc: CallOptions, job_id: str = "") -> common_pb2.TrainingJob:
    """Stops a job (the current one when job_id is ""); errors as the trainer sent them."""
    reply = await trainer.StopTraining(trainer_pb2.StopTrainingRequest(job_id=job_id), **rpc.write)
    return reply.job
