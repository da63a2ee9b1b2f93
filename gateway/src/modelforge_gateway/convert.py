"""Protobuf messages -> the public JSON shapes (DESIGN 3). Raw pb never goes out on the wire."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from modelforge.v1 import common_pb2, events_pb2, hardware_pb2, inference_pb2, registry_pb2
from modelforge_common.catalog import TRAINING_SETTINGS
from modelforge_common.status import status_word

GIB = 1024**3
MIB = 1024**2

EVENT_TYPES = {
    events_pb2.EVENT_KIND_STATUS: "status",
    events_pb2.EVENT_KIND_PROGRESS: "progress",
    events_pb2.EVENT_KIND_METRIC: "metric",
    events_pb2.EVENT_KIND_LOG: "log",
}

# v1 wizard status words (responses.md TrainingStatus) for the job status words.
V1_STATUS = {
    "idle": "idle",
    "queued": "running",
    "running": "running",
    "completed": "completed",
    "error": "error",
    "stopped": "error",
    # Trained; the model's registration is being retried: not finished yet.
    "registering": "running",
}


def iso_z(ts: timestamp_pb2.Timestamp, *, millis: bool = False) -> str | None:
    """ISO 8601 in UTC with a Z suffix; None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    moment = ts.ToDatetime(tzinfo=dt.UTC)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gib(num_bytes: int | float, digits: int = 2) -> float:
    return round(num_bytes / GIB, digits)


def _plain_numbers(value: Any) -> Any:
    """protobuf Struct stores every number as a double: give integral ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(_plain_numbers(json_format.MessageToDict(struct)))


# --- models -------------------------------------------------------------------------------------


def model_summary(model: registry_pb2.Model) -> dict[str, Any]:
    """Union of rest-api.md and responses.md model fields."""
    return {
        "id": int(model.id),
        "model_id": model.model_id,
        "name": model.name,
        "base_model": model.base_model,
        "task": model.task,
        "strategy": model.strategy,
        "provider": model.provider,
        "created_at": iso_z(model.created_at),
        "size_mb": round(model.size_mb, 2),
        "path": model.path,
    }


def model_details(model: registry_pb2.Model) -> dict[str, Any]:
    return {
        **model_summary(model),
        "config": struct_dict(model.config),
        "training_params": struct_dict(model.training_params),
        "metrics": dict(model.metrics),
        "job_id": model.job_id,
        "adapter_type": model.adapter_type,
    }


def model_lineage(model: registry_pb2.Model) -> dict[str, Any] | None:
    """The Lineage message as public JSON (plain numbers, ISO times); None when none was recorded."""
    if not model.HasField("lineage"):
        return None
    lineage = model.lineage
    base, dataset, environment, job = lineage.base_model, lineage.dataset, lineage.environment, lineage.job
    return {
        "base_model": {
            "name": base.name,
            "local": base.local,
            "config_sha256": base.config_sha256,
            "revision": base.revision or None,
        },
        "dataset": {
            "filename": dataset.filename,
            "path": dataset.path,
            "sha256": dataset.sha256,
            "num_rows": dataset.num_rows,
            "train_rows": dataset.train_rows,
            "eval_rows": dataset.eval_rows,
            "eval_split": dataset.eval_split,
            "seed": dataset.seed,
            # Only for datasets read through a column mapping / not uploaded as JSONL.
            **({"column_mapping": dict(dataset.column_mapping)} if dataset.column_mapping else {}),
            **({"source": dict(dataset.source)} if dataset.source else {}),
        },
        "config": struct_dict(lineage.config),
        "task": lineage.task,
        "strategy": lineage.strategy,
        "provider": lineage.provider,
        "environment": {
            "versions": dict(environment.versions),
            "device": environment.device,
            "python": environment.python,
            # Jobs of several processes (issue 19); lineage from before them says 1 process.
            "world_size": environment.world_size or 1,
            "distributed": environment.distributed,
            "processes_per_node": environment.processes_per_node or 1,
            "num_nodes": environment.num_nodes or 1,
        },
        "job": {
            "job_id": job.job_id,
            "queued_at": iso_z(job.queued_at, millis=True),
            "started_at": iso_z(job.started_at, millis=True),
            "finished_at": iso_z(job.finished_at, millis=True),
            "duration_s": job.duration_s,
            "status": job.status,
            "owner": job.owner,
        },
        "metrics": dict(lineage.metrics),
        "loss_curve": [
            {
                "step": point.step,
                "loss": point.loss,
                "learning_rate": point.learning_rate if point.HasField("learning_rate") else None,
                "epoch": point.epoch,
            }
            for point in lineage.loss_curve
        ],
        "parent_model_id": lineage.parent_model_id or None,
    }


# The start_training settings a reproduce body repeats. Left out: the name (names are unique, the
# second run gets its own), resume_from_job and compute_specs (every setting it implies is explicit).
REPRODUCED_SETTINGS = TRAINING_SETTINGS


def reproduce_body(lineage: dict[str, Any]) -> dict[str, Any]:
    """A POST /api/start_training body for the same base, the same dataset (by name, pinned by its
    sha256) and the same settings."""
    config = lineage["config"]
    return {
        "task": lineage["task"],
        "model_name": lineage["base_model"]["name"],
        "provider": lineage["provider"],
        "strategy": lineage["strategy"],
        "dataset": lineage["dataset"]["filename"],
        "dataset_sha256": lineage["dataset"]["sha256"] or None,
        **{name: config[name] for name in REPRODUCED_SETTINGS if name in config},
    }


def model_ref(model: registry_pb2.Model) -> inference_pb2.ModelRef:
    return inference_pb2.ModelRef(
        model_id=model.model_id,
        base_model=model.base_model,
        path=model.path,
        task=model.task,
        adapter_type=model.adapter_type,
        file_sha256=dict(model.file_sha256),
    )


# --- datasets -----------------------------------------------------------------------------------


def dataset_summary(dataset: registry_pb2.Dataset) -> dict[str, Any]:
    return {
        "filename": dataset.filename,
        "num_examples": dataset.num_examples,
        # Four decimals so a small file does not read as 0 MB.
        "size_mb": round(dataset.size_bytes / MIB, 4),
        "uploaded_at": iso_z(dataset.uploaded_at),
        "columns": list(dataset.fields),
        "column_mapping": dict(dataset.column_mapping),
        "source": {field.name: value for field, value in dataset.source.ListFields()},
    }


def issue_text(issue: registry_pb2.DatasetIssue) -> str:
    where = f"line {issue.line}" if issue.line else "file"
    field = f", field {issue.field}" if issue.field else ""
    return f"{where}{field}: {issue.message}"


# --- training status ----------------------------------------------------------------------------


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def training_status(has_job: bool, job: common_pb2.TrainingJob) -> dict[str, Any]:
    """rest-api.md /api/training_status; "training" is its word for a running job."""
    if not has_job:
        return {
            "status": "idle",
            "progress": 0.0,
            "current_epoch": 0,
            "total_epochs": 0,
            "current_step": 0,
            "total_steps": 0,
            "loss": None,
            "learning_rate": None,
            "job_id": None,
            "message": "No training in progress",
            "error": None,
        }
    word = status_word(job.status)
    return {
        "status": "training" if word == "running" else word,
        "progress": round(job.progress, 2),
        "current_epoch": job.current_epoch,
        "total_epochs": job.total_epochs,
        "current_step": job.current_step,
        "total_steps": job.total_steps,
        "loss": _optional(job, "loss"),
        "learning_rate": _optional(job, "learning_rate"),
        "job_id": job.job_id,
        "message": job.message,
        "error": job.error or None,
    }


def wizard_status(has_job: bool, job: common_pb2.TrainingJob) -> dict[str, Any]:
    """responses.md /api/finetune/status: idle | running | completed | error."""
    if not has_job:
        return {"status": "idle", "progress": 0, "message": "No training in progress", "error": None}
    word = status_word(job.status)
    status = V1_STATUS[word]
    error: str | None = None
    if word == "completed":
        message = "Training completed successfully"
    elif word == "error":
        message, error = "Training failed", job.error or "Training failed"
    elif word == "stopped":
        message, error = "Training was stopped", "Training was stopped"
    elif word == "queued":
        message = job.message or "Training queued"
    elif word == "registering":
        message = job.message or "Training finished; registering the model"
    elif word == "running":
        message = job.message or (
            f"Training epoch {job.current_epoch}/{job.total_epochs} - Step {job.current_step}/{job.total_steps}"
        )
    else:
        message = "No training in progress"
    return {
        "status": status,
        "progress": round(job.progress),
        "message": message,
        "error": error,
        "job_id": job.job_id,
        "model_id": job.model_id or None,
    }


def event_json(event: events_pb2.TrainingEvent) -> dict[str, Any]:
    """One /ws/training message (DESIGN 3)."""
    return {
        "type": EVENT_TYPES.get(event.kind, "log"),
        "job_id": event.job_id,
        "seq": event.seq,
        "timestamp": iso_z(event.timestamp, millis=True) or now_iso(),
        # Log and metric events may leave the status unset: no status rather than a wrong one.
        "status": status_word(event.status) if event.status else None,
        "progress": round(event.progress, 2),
        "current_epoch": event.current_epoch,
        "total_epochs": event.total_epochs,
        "current_step": event.current_step,
        "total_steps": event.total_steps,
        "loss": _optional(event, "loss"),
        "learning_rate": _optional(event, "learning_rate"),
        "message": event.message,
        "error": event.error or None,
        "metrics": dict(event.metrics),
        "model_id": event.model_id or None,
        "epoch": event.epoch,
    }


def status_event_json(has_job: bool, job: common_pb2.TrainingJob) -> dict[str, Any]:
    """The "status" event a socket receives first: the job's state as the trainer knows it now."""
    if not has_job:
        return {
            "type": "status",
            "job_id": None,
            "seq": 0,
            "timestamp": now_iso(),
            "status": "idle",
            "progress": 0.0,
            "current_epoch": 0,
            "total_epochs": 0,
            "current_step": 0,
            "total_steps": 0,
            "loss": None,
            "learning_rate": None,
            "message": "No training in progress",
            "error": None,
            "metrics": {},
            "model_id": None,
            "epoch": 0.0,
        }
    return {
        "type": "status",
        "job_id": job.job_id,
        "seq": job.last_seq,
        "timestamp": now_iso(),
        "status": status_word(job.status),
        "progress": round(job.progress, 2),
        "current_epoch": job.current_epoch,
        "total_epochs": job.total_epochs,
        "current_step": job.current_step,
        "total_steps": job.total_steps,
        "loss": _optional(job, "loss"),
        "learning_rate": _optional(job, "learning_rate"),
        "message": job.message,
        "error": job.error or None,
        "metrics": {},
        "model_id": job.model_id or None,
        "epoch": job.epoch,
    }


# --- hardware -----------------------------------------------------------------------------------


def _first_gpu(hardware: hardware_pb2.HardwareInfo) -> hardware_pb2.Gpu | None:
    return min(hardware.gpus, key=lambda g: g.index) if hardware.gpus else None


def detect(
    task: str, recommendations: hardware_pb2.GetRecommendationsResponse, hardware: hardware_pb2.HardwareInfo
) -> dict[str, Any]:
    """responses.md /api/finetune/detect. Without a GPU, gpu_name is "" and its memory 0."""
    gpu = _first_gpu(hardware)
    return {
        "status_code": 200,
        "profile": recommendations.profile or hardware.profile,
        "task": task,
        "gpu_name": gpu.name if gpu else "",
        "gpu_total_memory_gb": gib(gpu.total_memory_bytes) if gpu else 0.0,
        "ram_total_gb": gib(hardware.ram_total_bytes),
        "available_diskspace_gb": gib(hardware.disk_free_bytes),
        "cpu_cores": hardware.cpu_cores,
        "model_recommendation": recommendations.recommended_model,
        "possible_options": list(recommendations.possible_models),
    }


def hardware_specs(hardware: hardware_pb2.HardwareInfo) -> dict[str, Any]:
    """responses.md HardwareSpecs, plus the device type and every GPU."""
    gpu = _first_gpu(hardware)
    return {
        "gpu_name": gpu.name if gpu else "",
        "gpu_memory_gb": gib(gpu.total_memory_bytes) if gpu else 0.0,
        "ram_gb": gib(hardware.ram_total_bytes),
        "disk_space_gb": gib(hardware.disk_free_bytes),
        "cpu_cores": hardware.cpu_cores,
        "cuda_version": hardware.cuda_driver_version or None,
        "torch_version": hardware.torch_version or None,
        "device_type": hardware.device_type or "cpu",
        "profile": hardware.profile,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "total_memory_gb": gib(g.total_memory_bytes),
                "free_memory_gb": gib(g.free_memory_bytes),
            }
            for g in hardware.gpus
        ],
    }


def training_defaults(defaults: hardware_pb2.TrainingDefaults) -> dict[str, Any]:
    """responses.md /api/finetune/load_settings."""
    return {
        "per_device_train_batch_size": defaults.per_device_train_batch_size,
        "gradient_accumulation_steps": defaults.gradient_accumulation_steps,
        "learning_rate": defaults.learning_rate,
        "num_train_epochs": _plain_numbers(defaults.num_train_epochs),
        "max_seq_length": defaults.max_seq_length,
        "lora_r": defaults.lora_r,
        "lora_alpha": defaults.lora_alpha,
        "use_4bit": defaults.use_4bit,
        "bf16": defaults.bf16,
        "warmup_ratio": defaults.warmup_ratio,
        "lr_scheduler_type": defaults.lr_scheduler_type,
        "optim": defaults.optim,
    }


_BREAKDOWN_PARTS = ("weights", "adapters", "optimizer", "gradients", "activations", "overhead", "logits", "total")


def _memory_settings(settings: hardware_pb2.MemorySettings) -> dict[str, Any]:
    return {
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "max_seq_length": settings.max_seq_length,
        "use_4bit": settings.use_4bit,
        "gradient_checkpointing": settings.gradient_checkpointing,
        "provider": settings.provider,
    }


def _memory_part(part: hardware_pb2.MemoryPart) -> dict[str, Any]:
    return {"name": part.name, "bytes": int(part.bytes), "gb": gib(part.bytes, 3), "detail": part.detail}


def memory_estimate(model_name: str, reply: hardware_pb2.EstimateMemoryResponse) -> dict[str, Any]:
    """EstimateMemory in bytes and GiB ("gb" = 1024**3 bytes, as everywhere in this API)."""
    breakdown: dict[str, Any] = {}
    for part in _BREAKDOWN_PARTS:
        value = int(getattr(reply.breakdown, f"{part}_bytes"))
        breakdown[f"{part}_bytes"] = value
        breakdown[f"{part}_gb"] = gib(value, 3)
    parts = [_memory_part(part) for part in reply.breakdown.parts]
    breakdown["parts"] = parts
    return {
        "model_name": model_name,
        "fits": reply.fits,
        "device": reply.device,
        "message": reply.message,
        "total_bytes": breakdown["total_bytes"],
        "total_gb": breakdown["total_gb"],
        "available_bytes": int(reply.available_bytes),
        "available_gb": gib(reply.available_bytes, 3),
        "breakdown": breakdown,
        "provider": reply.provider or "huggingface",
        "max_batch_size": reply.max_batch_size,
        "largest_parts": parts[:3],
        "proposals": [
            {
                "settings": _memory_settings(proposal.settings),
                "changed": list(proposal.changed),
                "description": proposal.description,
                "total_bytes": int(proposal.total_bytes),
                "total_gb": gib(proposal.total_bytes, 3),
            }
            for proposal in reply.proposals
        ],
        "settings": _memory_settings(reply.settings) if reply.HasField("settings") else None,
    }


def describe_model(reply: hardware_pb2.DescribeModelResponse) -> dict[str, Any]:
    """responses.md model_info (id, author, downloads, likes) plus what the service also knows."""
    return {
        "id": reply.id,
        "author": reply.author,
        "downloads": int(reply.downloads),
        "likes": int(reply.likes),
        "local": reply.local,
        "architecture": reply.architecture or None,
        "gated": reply.gated,
    }


def job_json(job: common_pb2.TrainingJob) -> dict[str, Any]:
    """/api/jobs: a job of record, with who submitted it and how often it was delivered."""
    word = status_word(job.status)
    return {
        "job_id": job.job_id,
        "status": word if word != "idle" else "queued",
        "progress": round(job.progress, 2),
        "current_epoch": job.current_epoch,
        "total_epochs": job.total_epochs,
        "current_step": job.current_step,
        "total_steps": job.total_steps,
        "loss": _optional(job, "loss"),
        "learning_rate": _optional(job, "learning_rate"),
        "message": job.message,
        "error": job.error or None,
        "model_id": job.model_id or None,
        "owner": job.owner,
        "attempts": job.attempts,
        "last_seq": job.last_seq,
        "created_at": iso_z(job.created_at),
        "started_at": iso_z(job.started_at),
        "finished_at": iso_z(job.finished_at),
        "config": json_format.MessageToDict(job.config, preserving_proto_field_name=True),
    }
