"""Test helpers: fakes of the services trainer-svc calls (for its tests and other packages' tests that run a
real trainer without registry-svc / hardware-svc), and a synchronous runner for one worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelforge_common.errors import NotFound
from modelforge_trainer.config import ResolvedConfig
from modelforge_trainer.ports import DatasetInfo, MemoryEstimate, MemoryQuery, ModelRecord
from modelforge_trainer.worker.protocol import WorkerJob, WorkerMessage, WorkerResult, decode
from modelforge_trainer.worker.reporting import EventWriter, StopFlag


class FakeDatasets:
    """DatasetLookup over a dict of filename -> path."""

    def __init__(self, files: dict[str, Path] | None = None) -> None:
        self.files = dict(files or {})

    async def get_dataset(self, name: str) -> DatasetInfo:
        path = self.files.get(name)
        if path is None:
            raise NotFound(f"Dataset {name} not found")
        return DatasetInfo(filename=name, path=str(path))


class FakeEstimator:
    """MemoryEstimator answering a fixed estimate (or raising a fixed error)."""

    def __init__(self, estimate: MemoryEstimate | Exception) -> None:
        self.estimate = estimate
        self.queries: list[MemoryQuery] = []

    async def estimate_memory(self, query: MemoryQuery) -> MemoryEstimate:
        self.queries.append(query)
        if isinstance(self.estimate, Exception):
            raise self.estimate
        return self.estimate


class FakeRegistrar:
    """ModelRegistrar that records what it was given (or raises a fixed error)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.records: list[ModelRecord] = []
        self.error = error

    async def register_model(self, record: ModelRecord) -> str:
        if self.error is not None:
            raise self.error
        self.records.append(record)
        return f"model_{len(self.records)}"


@dataclass
class WorkerRun:
    returncode: int
    messages: list[WorkerMessage]
    result: WorkerResult | None
    output: str


def worker_job(
    job_dir: Path, config: ResolvedConfig, job_id: str = "train_20240101_000000_test", resume_checkpoint: str = ""
) -> WorkerJob:
    return WorkerJob(
        job_id=job_id,
        config=config.to_dict(),
        output_dir=str(job_dir / "model"),
        checkpoint_dir=str(job_dir / "checkpoints"),
        result_path=str(job_dir / "result.json"),
        resume_checkpoint=resume_checkpoint,
    )


def run_worker_process(
    job: WorkerJob,
    job_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
    command: Sequence[str] = (sys.executable, "-m", "modelforge_trainer.worker"),
) -> WorkerRun:
    """Runs one worker process to its end, synchronously, and collects what it reported."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job_file = job_dir / "job.json"
    job.write(job_file)
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


def run_worker_inline(job: WorkerJob, job_dir: Path, stop: StopFlag | None = None) -> WorkerRun:
    """Runs a job's training in this process (what the worker process does, minus the process), so
    tests of many strategies pay for importing torch and trl once."""
    from modelforge_trainer.worker.run import run_job

    job_dir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    events = EventWriter(write_fd)
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
