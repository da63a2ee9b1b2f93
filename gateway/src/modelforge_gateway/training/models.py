"""Request and response bodies of the training endpoints (the start request is shared:
common.training_params)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class StartTrainingResponse(BaseModel):
    status: Literal["started"] = "started"
    job_id: str
    message: str = "Training started successfully"


class TrainingStatusResponse(BaseModel):
    status: str
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    job_id: str | None = None
    message: str = ""
    error: str | None = None


class StopTrainingResponse(BaseModel):
    """rest-api.md's shape; status says what happened: "stopped" (documented), "stopping" when the
    worker had not ended by the time the trainer answered, or the state the job ended in first."""

    status: Literal["stopped", "stopping", "completed", "error", "registering"] = "stopped"
    message: str = "Training stopped successfully"
