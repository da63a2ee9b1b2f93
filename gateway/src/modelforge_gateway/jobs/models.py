"""Response bodies of the jobs API (the submit request is the start request: common.training_params)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from modelforge_gateway.common.job_records import JobStatusWord


class JobResponse(BaseModel):
    """A queued training job as the job store keeps it."""

    job_id: str
    status: JobStatusWord
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str | None
    model_id: str | None
    owner: str
    attempts: int
    last_seq: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    config: dict[str, Any]


class JobListResponse(BaseModel):
    jobs: list[JobResponse]
    total: int
