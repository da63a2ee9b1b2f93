"""Protobuf <-> domain conversions for the trainer (requests, jobs, events, registry models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from modelforge.v1 import common_pb2, events_pb2, registry_pb2
from modelforge_trainer.jobs import EventKind, Job, JobEvent, JobStatus
from modelforge_trainer.ports import JobRecord, ModelRecord
from modelforge_training.settings import clear_field, has_field
from modelforge_training.spec import TrainingJobSpec

STATUS_TO_PB = {
    JobStatus.QUEUED: common_pb2.JOB_STATUS_QUEUED,
    JobStatus.RUNNING: common_pb2.JOB_STATUS_RUNNING,
    JobStatus.COMPLETED: common_pb2.JOB_STATUS_COMPLETED,
    JobStatus.ERROR: common_pb2.JOB_STATUS_ERROR,
    JobStatus.STOPPED: common_pb2.JOB_STATUS_STOPPED,
    JobStatus.REGISTERING: common_pb2.JOB_STATUS_REGISTERING,
}
STATUS_FROM_PB = {value: status for status, value in STATUS_TO_PB.items()}
KIND_TO_PB = {
    EventKind.STATUS: events_pb2.EVENT_KIND_STATUS,
    EventKind.PROGRESS: events_pb2.EVENT_KIND_PROGRESS,
    EventKind.METRIC: events_pb2.EVENT_KIND_METRIC,
    EventKind.LOG: events_pb2.EVENT_KIND_LOG,
}

_OMITTED_WHEN_EMPTY = ("name", "compute_specs", "resume_from_job", "eval_dataset", "distributed")


def resolved_to_pb(spec: TrainingJobSpec, force: bool = False) -> common_pb2.TrainingConfig:
    """The configuration a job runs with, every setting set (empty names and paths left unset)."""
    message = common_pb2.TrainingConfig()
    message.CopyFrom(spec.config)
    message.force = force
    for name in _OMITTED_WHEN_EMPTY:
        if not getattr(message, name):
            clear_field(message, name)
    return message


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_to_pb(job: Job) -> common_pb2.TrainingJob:
    message = common_pb2.TrainingJob(
        job_id=job.job_id,
        status=STATUS_TO_PB[job.status],
        progress=job.progress,
        current_epoch=job.current_epoch,
        total_epochs=job.total_epochs,
        current_step=job.current_step,
        total_steps=job.total_steps,
        message=job.message,
        error=job.error,
        config=resolved_to_pb(job.spec, job.request.force),
        model_id=job.model_id,
        last_seq=job.last_seq,
        epoch=job.epoch,
        owner=job.owner,
        attempts=job.attempts,
    )
    if job.loss is not None:
        message.loss = job.loss
    if job.learning_rate is not None:
        message.learning_rate = job.learning_rate
    for name in ("created_at", "started_at", "finished_at"):
        stamp = timestamp(getattr(job, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def event_to_pb(event: JobEvent) -> events_pb2.TrainingEvent:
    message = events_pb2.TrainingEvent(
        job_id=event.job_id,
        kind=KIND_TO_PB[event.kind],
        seq=event.seq,
        status=STATUS_TO_PB[event.status],
        progress=event.progress,
        current_epoch=event.current_epoch,
        total_epochs=event.total_epochs,
        current_step=event.current_step,
        total_steps=event.total_steps,
        message=event.message,
        error=event.error,
        metrics=event.metrics,
        model_id=event.model_id,
        epoch=event.epoch,
    )
    message.timestamp.FromDatetime(event.timestamp)
    if event.loss is not None:
        message.loss = event.loss
    if event.learning_rate is not None:
        message.learning_rate = event.learning_rate
    return message


def encode_event(event: JobEvent) -> bytes:
    return event_to_pb(event).SerializeToString()


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def model_to_pb(record: ModelRecord) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=record.name,
        base_model=record.base_model,
        task=record.task,
        strategy=record.strategy,
        provider=record.provider,
        path=record.path,
        config=to_struct(record.config),
        training_params=to_struct(record.training_params),
        metrics=record.metrics,
        job_id=record.job_id,
        adapter_type=record.adapter_type,
        lineage=json_format.ParseDict(record.lineage, registry_pb2.Lineage()) if record.lineage is not None else None,
    )


_RECORD_TIMES = ("queued_at", "started_at", "finished_at")


def record_time(record: JobRecord, name: str) -> datetime | None:
    """queued_at, started_at or finished_at of a job of record (None while unset)."""
    stamp: timestamp_pb2.Timestamp = getattr(record, name)
    return stamp.ToDatetime(tzinfo=UTC) if has_field(record, name) else None


def record_request(record: JobRecord) -> dict[str, Any]:
    """The start request a job of record keeps, as JSON."""
    return json_format.MessageToDict(record.request)


def record_changes(job_id: str, changes: dict[str, Any]) -> JobRecord:
    """A partial job of record for an update: its named fields set (datetimes, a request dict)."""
    record = JobRecord(job_id=job_id)
    for name, value in changes.items():
        if name in _RECORD_TIMES:
            stamp = timestamp(value)
            if stamp is not None:
                getattr(record, name).CopyFrom(stamp)
        elif name == "request":
            record.request.CopyFrom(to_struct(value))
        else:
            setattr(record, name, value)
    return record
