"""TrainingJob -> the training endpoints' answers."""

from __future__ import annotations

from modelforge.v1 import common_pb2
from modelforge_common.status import status_word
from modelforge_gateway.common.job_records import IDLE_PROGRESS, progress_of
from modelforge_gateway.training.models import StopTrainingResponse, TrainingStatusResponse


def training_status(has_job: bool, job: common_pb2.TrainingJob) -> TrainingStatusResponse:
    """rest-api.md /api/training_status; "training" is its word for a running job."""
    if not has_job:
        return TrainingStatusResponse(status="idle", job_id=None, **IDLE_PROGRESS)
    word = status_word(job.status)
    return TrainingStatusResponse(
        status="training" if word == "running" else word, job_id=job.job_id, **progress_of(job)
    )


def stop_answer(job: common_pb2.TrainingJob) -> StopTrainingResponse:
    """rest-api.md's body when the job has stopped; what did happen when it has not (the trainer
    waits for the worker to save and exit, but answers before the call's deadline)."""
    if job.status == common_pb2.JOB_STATUS_STOPPED:
        return StopTrainingResponse()
    if job.status == common_pb2.JOB_STATUS_RUNNING:
        return StopTrainingResponse(
            status="stopping",
            message=f"Stop requested; job {job.job_id} is still saving its checkpoint and will end as stopped",
        )
    word = common_pb2.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower()
    return StopTrainingResponse(
        status=word,
        message=f"Job {job.job_id} ended as {word} before the stop took effect",
    )
