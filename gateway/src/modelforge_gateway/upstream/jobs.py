"""Training jobs as several slices need them: start one, read one by id."""

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
        reply = await trainer.GetTrainingStatus(
            trainer_pb2.GetTrainingStatusRequest(job_id=checked_job_id(job_id)), **rpc.read
        )
    return reply.job
