"""Test helpers of the runtime: a job file for a configuration, and synchronous runs of one job (in a
process of its own, or in this process so tests of many strategies import torch once)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelforge_training.events import PipeEventSink, StopFlag
from modelforge_training.protocol import WorkerMessage, WorkerResult, decode
from modelforge_training.spec import TrainingConfig, TrainingJobSpec, write_spec


@dataclass
class WorkerRun:
    returncode: int
    messages: list[WorkerMessage]
    result: WorkerResult | None
    output: str


# A complete configuration, as trainer-svc resolves one with its default settings: the runtime's tests
# build their specs from it without the service.
RESOLVED_SETTINGS: dict[str, object] = {
    "provider": "huggingface",
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "max_seq_length": 2048,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "bf16": True,
    "warmup_ratio": 0.03,
    "lr_scheduler_type": "cosine",
    "optim": "adamw_torch",
    "max_steps": -1,
    "save_steps": 200,
    "logging_steps": 1,
    "eval_split": 0.1,
    "seed": 42,
    "weight_decay": 0.0,
    "processes_per_node": 1,
    "num_nodes": 1,
}


def job_spec(task: str, strategy: str, model: Path, dataset: Path, **settings: object) -> TrainingJobSpec:
    """A resolved spec training `model` (a local folder) on `dataset`; `settings` override the defaults."""
    values = {**RESOLVED_SETTINGS, "use_4bit": strategy == "qlora", **settings}
    config = TrainingConfig(task=task, strategy=strategy, model_name=str(model), dataset=dataset.name, **values)  # type: ignore[arg-type]
    return TrainingJobSpec(config=config, dataset_path=str(dataset), local_model=True)


def worker_job(
    job_dir: Path, spec: TrainingJobSpec, job_id: str = "train_20240101_000000_test", resume_checkpoint: str = ""
) -> TrainingJobSpec:
    """A copy of `spec` (its config and datasets resolved) with a job's folders under job_dir."""
    job = TrainingJobSpec()
    job.CopyFrom(spec)
    job.job_id = job_id
    job.output_dir = str(job_dir / "model")
    job.checkpoint_dir = str(job_dir / "checkpoints")
    job.result_path = str(job_dir / "result.json")
    job.resume_checkpoint = resume_checkpoint
    job.event_sink = job.event_sink or "pipe"
    return job


def run_worker_process(
    job: TrainingJobSpec,
    job_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
    command: Sequence[str] = (sys.executable, "-m", "modelforge_training"),
) -> WorkerRun:
    """Runs one worker process to its end, synchronously, and collects what it reported."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job_file = job_dir / "job.json"
    write_spec(job, job_file)
    read_fd, write_fd = os.pipe()
    with open(job_dir / "worker.log", "w+b") as output:
        process = subprocess.Popen(
            [*command, str(job_file), "--events-fd", str(write_fd)],
            pass_fds=(write_fd,),
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as events:
            messages = [m for m in (decode(line) for line in events) if m is not None]
        returncode = process.wait(timeout=timeout_s)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    return WorkerRun(returncode, messages, WorkerResult.read(Path(job.result_path)), text)


def run_worker_inline(job: TrainingJobSpec, job_dir: Path, stop: StopFlag | None = None) -> WorkerRun:
    """Runs a job's training in this process (what the worker process does, minus the process), so
    tests of many strategies pay for importing torch and trl once."""
    from modelforge_training.run import run_job

    job_dir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    events = PipeEventSink(write_fd)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(os.fdopen(read_fd, "rb")), daemon=True)
    reader.start()
    try:
        result = run_job(job, events, stop or StopFlag())
        result.write(Path(job.result_path))
        returncode = 0
    finally:
        events.close()
        reader.join(timeout=30)
    messages = [m for m in (decode(line) for line in lines) if m is not None]
    return WorkerRun(returncode, messages, result, "")
