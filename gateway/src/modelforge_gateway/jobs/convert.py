"""TrainingJob -> JobResponse; the status filter's words -> JobStatus values."""

from __future__ import annotations

from google.protobuf import json_format

from modelforge.v1 import common_pb2, trainer_pb2
from modelforge_common.status import status_word
from modelforge_gateway.common.job_records import JobStatusWord, progress_of
from modelforge_gateway.common.protoconv import iso_z
from modelforge_gateway.common.training_params import StartTrainingRequest
from modelforge_gateway.jobs.models import JobResponse

STATUS_VALUES: dict[str, common_pb2.JobStatus.ValueType] = {
    "queued": common_pb2.JOB_STATUS_QUEUED,
    "running": common_pb2.JOB_STATUS_RUNNING,
    "completed": common_pb2.JOB_STATUS_COMPLETED,
    "error": common_pb2.JOB_STATUS_ERROR,
    "stopped": common_pb2.JOB_STATUS_STOPPED,
    "registering": common_pb2.JOB_STATUS_REGISTERING,
}


def job_response(job: common_pb2.TrainingJob) -> JobResponse:
    """/api/jobs: a job of record, with who submitted it and how often it was delivered."""
    word = status_word(job.status)
    return JobResponse(
        job_id=job.job_id,
        status=word if word != "idle" else "queued",
        **progress_of(job),
        model_id=job.model_id or None,
        owner=job.owner,
        attempts=job.attempts,
        last_seq=job.last_seq,
        created_at=iso_z(job.created_at),
        started_at=iso_z(job.started_at),
        finished_at=iso_z(job.finished_at),
        config=json_format.MessageToDict(job.config, preserving_proto_field_name=True),
    )


def submit_request(
    body: StartTrainingRequest, idempotency_key: str | None, owner: str
) -> trainer_pb2.SubmitTrainingJobRequest:
    return trainer_pb2.SubmitTrainingJobRequest(
        config=body.to_pb(body.task, body.model_name), idempotency_key=idempotency_key or "", owner=owner
    )


def list_request(statuses: list[JobStatusWord] | None, limit: int, offset: int) -> trainer_pb2.ListTrainingJobsRequest:
    return trainer_pb2.ListTrainingJobsRequest(
        statuses=[STATUS_VALUES[word] for word in statuses or []], limit=limit, offset=offset
    )
