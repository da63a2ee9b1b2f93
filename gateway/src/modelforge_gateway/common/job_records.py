"""A training job and its events as the API shows them. The trainer's TrainingJob and
TrainingEvent carry the same progress fields; they are read here, once, for every answer that
repeats them (training status, jobs, the wizard's status, /ws/training and the event streams)."""

from __future__ import annotations

from typing import Literal, TypedDict

from modelforge.v1 import common_pb2, events_pb2
from modelforge_common.status import status_word
from modelforge_gateway.common.protoconv import iso_z, now_iso, optional_float

JobStatusWord = Literal["queued", "running", "registering", "completed", "error", "stopped"]

EVENT_TYPES = {
    events_pb2.EVENT_KIND_STATUS: "status",
    events_pb2.EVENT_KIND_PROGRESS: "progress",
    events_pb2.EVENT_KIND_METRIC: "metric",
    events_pb2.EVENT_KIND_LOG: "log",
}

NOTHING_RUNS = "No training in progress"


class Progress(TypedDict):
    """The fields TrainingJob and TrainingEvent share, as every answer names them."""

    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str | None


IDLE_PROGRESS = Progress(
    progress=0.0,
    current_epoch=0,
    total_epochs=0,
    current_step=0,
    total_steps=0,
    loss=None,
    learning_rate=None,
    message=NOTHING_RUNS,
    error=None,
)


def progress_of(record: common_pb2.TrainingJob | events_pb2.TrainingEvent) -> Progress:
    return Progress(
        progress=round(record.progress, 2),
        current_epoch=record.current_epoch,
        total_epochs=record.total_epochs,
        current_step=record.current_step,
        total_steps=record.total_steps,
        loss=optional_float(record, "loss"),
        learning_rate=optional_float(record, "learning_rate"),
        message=record.message,
        error=record.error or None,
    )


class JobEventFields(Progress):
    """events.models.JobEvent as the plain dict the event hub fans out: every socket shares one such dict and
    its JSON text is rendered once (eventhub.SharedEvent), so no model is built per event."""

    type: str
    job_id: str | None
    seq: int
    timestamp: str
    status: str | None
    metrics: dict[str, float]
    model_id: str | None
    epoch: float


def event_fields(event: events_pb2.TrainingEvent) -> JobEventFields:
    """One /ws/training message (DESIGN 3)."""
    return JobEventFields(
        type=EVENT_TYPES.get(event.kind, "log"),
        job_id=event.job_id,
        seq=event.seq,
        timestamp=_event_time(event),
        # Log and metric events may leave the status unset: no status rather than a wrong one.
        status=status_word(event.status) if event.status else None,
        **progress_of(event),
        metrics=dict(event.metrics),
        model_id=event.model_id or None,
        epoch=event.epoch,
    )


def _event_time(event: events_pb2.TrainingEvent) -> str:
    return iso_z(event.timestamp, millis=True) or now_iso()


def status_event_fields(has_job: bool, job: common_pb2.TrainingJob) -> JobEventFields:
    """The "status" event a socket receives first: the job's state as the trainer knows it now."""
    if not has_job:
        return JobEventFields(
            type="status",
            job_id=None,
            seq=0,
            timestamp=now_iso(),
            status="idle",
            **IDLE_PROGRESS,
            metrics={},
            model_id=None,
            epoch=0.0,
        )
    return JobEventFields(
        type="status",
        job_id=job.job_id,
        seq=job.last_seq,
        timestamp=now_iso(),
        status=status_word(job.status),
        **progress_of(job),
        metrics={},
        model_id=job.model_id or None,
        epoch=job.epoch,
    )
