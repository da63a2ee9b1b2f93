"""Platform messages -> the objects OpenAI returns, with every field the openai SDK's types declare.

Where OpenAI has data the platform keeps differently, it is derived:
- a file id is the first part of the registry dataset's filename (files.stored_name);
- `created_at` / `finished_at` are the job's and the dataset's timestamps in whole seconds;
- `hyperparameters` are the values the job runs with (the trainer resolves every default), and
  `learning_rate_multiplier` is the learning rate over the trainer's default, BASE_LEARNING_RATE;
- `user_provided_suffix` is kept in the registered model's name (SUFFIX_NAME);
- `validation_file` is the job's evaluation dataset (TrainingConfig.eval_dataset);
- events are the job's stored training events (the ones /ws/training sends), newest first;
- the checkpoint of a finished job is its registered model, with the final training loss and the
  held-out loss as metrics (the trainer keeps intermediate checkpoints only until registration).

Plain Python: no fastapi, no grpc.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any, Literal, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from modelforge.v1 import common_pb2, registry_pb2
from modelforge_gateway.openai.files import parse_stored_name
from modelforge_gateway.openai.responses import (
    Checkpoint,
    CheckpointMetrics,
    DpoJobHyperparameters,
    DpoJobMethod,
    DpoSettings,
    FileObject,
    FineTuningJob,
    JobError,
    JobEvent,
    JobHyperparameters,
    ModelObject,
    SupervisedJobMethod,
    SupervisedSettings,
)

ORGANIZATION_ID = "org-modelforge"
OWNER = "modelforge"
# The trainer's default learning rate (trainer-svc settings default_learning_rate): the multiplier's 1.
BASE_LEARNING_RATE = 2e-4
# Registered model names of /v1 jobs: "<base>:ft-<suffix>:<8 hex>" ("ft" alone without a suffix).
SUFFIX_NAME = re.compile(r"^.+:ft(?:-(?P<suffix>.+))?:[0-9a-f]{8}$")

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUS: Mapping[int, JobStatus] = {
    common_pb2.JOB_STATUS_QUEUED: "queued",
    common_pb2.JOB_STATUS_RUNNING: "running",
    common_pb2.JOB_STATUS_COMPLETED: "succeeded",
    common_pb2.JOB_STATUS_ERROR: "failed",
    common_pb2.JOB_STATUS_STOPPED: "cancelled",
}
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
DPO_STRATEGIES = frozenset({"dpo"})
# The beta a DPO job trains with when none is asked for (trainer-svc strategies/dpo.py BETA).
DPO_BETA = 0.1


def seconds(ts: timestamp_pb2.Timestamp) -> int | None:
    return int(ts.seconds) if ts.seconds or ts.nanos else None


def iso_seconds(text: str | None) -> int:
    if not text:
        return 0
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def job_status(job: common_pb2.TrainingJob) -> JobStatus:
    # A status word added later (e.g. registering the model) is still work in progress.
    return JOB_STATUS.get(job.status, "running")


def file_id_of(dataset: str) -> str:
    """The OpenAI file id of a job's dataset; the dataset's own name for one uploaded through /api."""
    name = PurePath(dataset).name
    parsed = parse_stored_name(name)
    return parsed[0] if parsed else name


def suffix_of(name: str) -> str | None:
    match = SUFFIX_NAME.match(name)
    return match.group("suffix") if match else None


def model_name_for(base_model: str, suffix: str | None, unique: str) -> str:
    base = PurePath(base_model.rstrip("/")).name or "model"
    return f"{base}:ft-{suffix}:{unique}" if suffix else f"{base}:ft:{unique}"


def _int_or_auto(config: common_pb2.TrainingConfig, name: str) -> int | Literal["auto"]:
    # HasField by a name held in a str: the generated stubs accept only the field names as literals.
    message: Message = config
    return int(getattr(config, name)) if message.HasField(name) else "auto"


def hyperparameters(config: common_pb2.TrainingConfig) -> JobHyperparameters:
    multiplier: float | Literal["auto"] = "auto"
    if config.HasField("learning_rate"):
        multiplier = round(config.learning_rate / BASE_LEARNING_RATE, 6)
    return JobHyperparameters(
        n_epochs=_int_or_auto(config, "num_train_epochs"),
        batch_size=_int_or_auto(config, "per_device_train_batch_size"),
        learning_rate_multiplier=multiplier,
    )


def method(config: common_pb2.TrainingConfig) -> SupervisedJobMethod | DpoJobMethod:
    params = hyperparameters(config)
    if config.strategy in DPO_STRATEGIES:
        beta = config.dpo_beta if config.HasField("dpo_beta") else DPO_BETA
        dpo_params = DpoJobHyperparameters(**params.model_dump(), beta=beta)
        return DpoJobMethod(dpo=DpoSettings(hyperparameters=dpo_params))
    return SupervisedJobMethod(supervised=SupervisedSettings(hyperparameters=params))


def job_object(job: common_pb2.TrainingJob, trained_tokens: int | None = None) -> FineTuningJob:
    config = job.config
    status = job_status(job)
    error = None
    if status == "failed":
        error = JobError(code="training_failed", message=job.error or "The training job failed.")
    return FineTuningJob(
        id=job.job_id,
        created_at=seconds(job.created_at) or 0,
        error=error,
        fine_tuned_model=job.model_id or None,
        finished_at=seconds(job.finished_at) if status in FINISHED else None,
        hyperparameters=hyperparameters(config),
        model=config.model_name,
        organization_id=ORGANIZATION_ID,
        result_files=[],
        seed=int(config.seed) if config.HasField("seed") else 0,
        status=status,
        trained_tokens=trained_tokens if status == "succeeded" else None,
        training_file=file_id_of(config.dataset),
        validation_file=file_id_of(config.eval_dataset) if config.eval_dataset else None,
        integrations=[],
        method=method(config),
        user_provided_suffix=suffix_of(config.name) if config.HasField("name") else None,
    )


def _event_message(event: Mapping[str, Any]) -> str:
    if event.get("message"):
        return str(event["message"])
    if event.get("type") == "progress":
        loss = event.get("loss")
        where = f"Step {event.get('current_step')}/{event.get('total_steps')}"
        return f"{where}: training loss={loss:.4f}" if loss is not None else where
    if event.get("type") == "status":
        return f"Job {event.get('status')}"
    return str(event.get("type") or "event")


def event_id(job_id: str, seq: int) -> str:
    return f"ftevent-{job_id}-{seq}"


def event_seq(ident: str, job_id: str) -> int | None:
    prefix = f"ftevent-{job_id}-"
    tail = ident[len(prefix) :] if ident.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def event_object(event: Mapping[str, Any]) -> JobEvent:
    """One /ws/training event (convert.event_json) as a fine_tuning.job.event."""
    kind = event.get("type")
    failed = kind == "status" and event.get("status") == "error"
    data: dict[str, Any] = {}
    is_metrics = (kind == "progress" and event.get("loss") is not None) or kind == "metric"
    if kind == "progress":
        data = {"step": event.get("current_step"), "total_steps": event.get("total_steps")}
        if event.get("loss") is not None:
            data["train_loss"] = event["loss"]
        if event.get("learning_rate") is not None:
            data["learning_rate"] = event["learning_rate"]
    elif kind == "metric":
        data = dict(event.get("metrics") or {})
    elif kind == "status":
        data = {"status": event.get("status")}
        if event.get("error"):
            data["error"] = event["error"]
    return JobEvent(
        id=event_id(str(event.get("job_id")), int(event.get("seq") or 0)),
        created_at=iso_seconds(event.get("timestamp")),
        level="error" if failed else "info",
        message=str(event.get("error")) if failed and event.get("error") else _event_message(event),
        data=data,
        type="metrics" if is_metrics else "message",
    )


def checkpoint_object(job: common_pb2.TrainingJob, model: registry_pb2.Model) -> Checkpoint:
    step = int(job.current_step or job.total_steps)
    # Token accuracy is not measured here: declared, and null.
    metrics = CheckpointMetrics(step=float(step))
    final_loss = model.metrics.get("final_loss", job.loss if job.HasField("loss") else None)
    if final_loss is not None:
        metrics.train_loss = float(final_loss)
    if "eval_loss" in model.metrics:
        metrics.valid_loss = metrics.full_valid_loss = float(model.metrics["eval_loss"])
    return Checkpoint(
        id=f"ftckpt-{job.job_id}-{step}",
        created_at=seconds(model.created_at) or seconds(job.finished_at) or 0,
        fine_tuned_model_checkpoint=model.model_id,
        fine_tuning_job_id=job.job_id,
        metrics=metrics,
        step_number=step,
    )


def file_object(dataset: registry_pb2.Dataset) -> FileObject | None:
    parsed = parse_stored_name(dataset.filename)
    if parsed is None:
        return None
    file_id, name = parsed
    return FileObject(
        id=file_id, bytes=int(dataset.size_bytes), created_at=seconds(dataset.uploaded_at) or 0, filename=name
    )


def model_object(ident: str, created: int, owned_by: str = OWNER) -> ModelObject:
    return ModelObject(id=ident, created=created, owned_by=owned_by)


Identified = TypeVar("Identified", FileObject, Checkpoint)


def page(items: list[Identified], after: str | None, limit: int) -> tuple[list[Identified], bool]:
    """A cursor page over items already in answer order: those after the `after` id, at most limit,
    and whether more follow. An unknown `after` gives an empty last page, so a client's auto-paging
    always ends."""
    start = 0
    if after is not None:
        ids = [item.id for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return items[start : start + limit], start + limit < len(items)
