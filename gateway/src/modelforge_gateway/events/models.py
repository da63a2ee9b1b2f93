"""Response bodies of the event endpoints."""

from __future__ import annotations

from pydantic import BaseModel


# The fields of common.job_records.JobEventFields, the shape the event hub fans out.
class JobEvent(BaseModel):
    """One /ws/training message (DESIGN 3), as stored in the TRAINING stream."""

    type: str
    job_id: str | None
    seq: int
    timestamp: str
    status: str | None
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str | None
    metrics: dict[str, float]
    model_id: str | None
    epoch: float


class JobEventsResponse(BaseModel):
    job_id: str
    events: list[JobEvent]
