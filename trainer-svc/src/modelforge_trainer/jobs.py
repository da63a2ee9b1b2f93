"""Training jobs as this trainer sees them: a small state machine per job and the registry of jobs.

Every change of a job produces a JobEvent with the job's next sequence number (1, 2, 3 ... without gaps);
the caller publishes it. Only this module assigns sequence numbers.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition, NotFound
from modelforge_training.protocol import Progress
from modelforge_training.spec import TrainingJobSpec


class JobStatus(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    STOPPED = "stopped"
    # Trained and saved; registering the model is retried until the registry takes it.
    REGISTERING = "registering"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.STOPPED)


class EventKind(enum.Enum):
    STATUS = "status"
    PROGRESS = "progress"
    METRIC = "metric"
    LOG = "log"


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    kind: EventKind
    seq: int
    timestamp: datetime
    status: JobStatus
    progress: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    message: str
    error: str
    metrics: dict[str, float]
    model_id: str
    epoch: float




def _now() -> datetime:
    return datetime.now(UTC)


def new_job_id(now: datetime | None = None) -> str:
    """train_20240315_143022_ab12: start time (UTC) and a random suffix."""
    stamp = (now or _now()).strftime("%Y%m%d_%H%M%S")
    return f"train_{stamp}_{secrets.token_hex(2)}"


@dataclass
class Job:
    job_id: str
    request: TrainingConfig  # as the user sent it
    spec: TrainingJobSpec  # what it runs with (every setting resolved); the runner fills its folders
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    current_epoch: int = 0
    total_epochs: int = 0
    current_step: int = 0
    total_steps: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    epoch: float = 0.0
    message: str = "Queued"
    error: str = ""
    model_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    worker_pid: int | None = None
    # Why the job is being stopped ("by user", "because trainer-svc shut down"); None while not stopping.
    stop_reason: str | None = None
    # Name of the API key that submitted it through the jobs API ("" without auth or via the seed API).
    owner: str = ""
    idempotency_key: str = ""
    # How many times a worker was started for it.
    attempts: int = 0
    clock: Callable[[], datetime] = field(default=_now, repr=False)

    @property
    def active(self) -> bool:
        return not self.status.terminal

    def _event(self, kind: EventKind, metrics: dict[str, float] | None = None, message: str | None = None) -> JobEvent:
        self.last_seq += 1
        return JobEvent(
            job_id=self.job_id,
            kind=kind,
            seq=self.last_seq,
            timestamp=self.clock(),
            status=self.status,
            progress=self.progress,
            current_epoch=self.current_epoch,
            total_epochs=self.total_epochs,
            current_step=self.current_step,
            total_steps=self.total_steps,
            loss=self.loss,
            learning_rate=self.learning_rate,
            message=self.message if message is None else message,
            error=self.error,
            metrics=dict(metrics if metrics is not None else {}),
            model_id=self.model_id,
            epoch=self.epoch,
        )

    def _require_active(self, action: str) -> None:
        if not self.active:
            raise FailedPrecondition(f"Training job {self.job_id} is {self.status.value}; cannot {action}")

    def mark_queued(self) -> JobEvent:
        """Its first event when it enters the queue: it waits for a free slot."""
        self._require_active("queue it")
        self.status = JobStatus.QUEUED
        self.message = "Queued, waiting for a free training slot"
        return self._event(EventKind.STATUS)

    def cancel_queued(self) -> JobEvent:
        """Stops a job that never started: nothing to wait for."""
        if self.status is not JobStatus.QUEUED:
            raise FailedPrecondition(f"Training job {self.job_id} is {self.status.value}, not queued")
        self.status = JobStatus.STOPPED
        self.finished_at = self.clock()
        self.message = "Cancelled before it started"
        return self._event(EventKind.STATUS)

    def mark_running(self, message: str = "Training started") -> JobEvent:
        self._require_active("start it")
        self.attempts += 1
        self.status = JobStatus.RUNNING
        self.started_at = self.clock()
        self.message = message
        return self._event(EventKind.STATUS)

    def mark_waiting(self, message: str) -> JobEvent:
        """A started job its scheduler holds back (a TrainJob suspended by Kueue): queued again, the
        same attempt."""
        self._require_active("queue it")
        self.status = JobStatus.QUEUED
        self.message = message
        return self._event(EventKind.STATUS)

    def mark_admitted(self, message: str) -> JobEvent:
        """A job its scheduler held back runs again (the same attempt as before it waited)."""
        self._require_active("run it")
        self.status = JobStatus.RUNNING
        self.message = message
        return self._event(EventKind.STATUS)

    def update_progress(self, update: Progress) -> JobEvent:
        self._require_active("report progress")
        self.current_step = update.step
        self.total_steps = update.total_steps
        self.epoch = update.epoch
        self.current_epoch = update.current_epoch
        self.total_epochs = update.total_epochs
        self.progress = max(0.0, min(100.0, update.progress))
        if update.loss is not None:
            self.loss = update.loss
        if update.learning_rate is not None:
            self.learning_rate = update.learning_rate
        if self.stop_reason is None:
            self.message = (
                f"Training epoch {self.current_epoch}/{self.total_epochs} - Step {self.current_step}/{self.total_steps}"
            )
        return self._event(EventKind.PROGRESS)

    def mark_stopping(self, reason: str) -> JobEvent:
        """A stop was asked for: the job runs on until the worker reaches its next step."""
        self._require_active("stop it")
        self.stop_reason = reason
        self.message = "Stopping at the next step (saving a checkpoint)"
        return self._event(EventKind.STATUS)

    def mark_registering(self, message: str) -> JobEvent:
        """Training is done and the model saved, but the registry did not take it yet: the job stays
        active while registration is retried."""
        self._require_active("register its model")
        self.status = JobStatus.REGISTERING
        self.message = message
        return self._event(EventKind.STATUS)

    def record_metrics(self, metrics: dict[str, float], message: str = "Evaluation finished") -> JobEvent:
        self._require_active("record metrics")
        self.metrics.update(metrics)
        return self._event(EventKind.METRIC, metrics, message)

    def log(self, message: str) -> JobEvent:
        """A log line of the worker; it does not change the job's state line."""
        return self._event(EventKind.LOG, message=message)

    def complete(self, model_id: str, metrics: dict[str, float]) -> JobEvent:
        self._require_active("complete it")
        self.status = JobStatus.COMPLETED
        self.model_id = model_id
        self.metrics.update(metrics)
        self.progress = 100.0
        self.finished_at = self.clock()
        self.message = "Training completed successfully"
        return self._event(EventKind.STATUS, self.metrics)

    def fail(self, error: str) -> JobEvent:
        self._require_active("fail it")
        self.status = JobStatus.ERROR
        self.error = error
        self.finished_at = self.clock()
        self.message = "Training failed"
        return self._event(EventKind.STATUS)

    def mark_stopped(self, message: str) -> JobEvent:
        self._require_active("stop it")
        self.status = JobStatus.STOPPED
        self.finished_at = self.clock()
        self.message = message
        return self._event(EventKind.STATUS)


class JobRegistry:
    """The jobs this trainer knows, newest last, and which one status requests mean by default."""

    def __init__(self, max_concurrent_jobs: int = 1, clock: Callable[[], datetime] = _now) -> None:
        self.max_concurrent_jobs = max_concurrent_jobs
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._current: str | None = None

    def active(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.active]

    def running(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.status is JobStatus.RUNNING]

    def next_queued(self) -> Job | None:
        """The oldest job still waiting for a slot (first in, first out)."""
        queued = [job for job in self._jobs.values() if job.status is JobStatus.QUEUED]
        return min(queued, key=lambda job: job.created_at) if queued else None

    def by_idempotency_key(self, key: str) -> Job | None:
        if not key:
            return None
        return next((job for job in self._jobs.values() if job.idempotency_key == key), None)

    def ensure_capacity(self) -> None:
        running = self.active()
        if len(running) >= self.max_concurrent_jobs:
            raise FailedPrecondition(f"A training job is already running: {running[0].job_id}")

    def create(self, request: TrainingConfig, spec: TrainingJobSpec) -> Job:
        self.ensure_capacity()
        return self._new(request, spec)

    def enqueue(self, request: TrainingConfig, spec: TrainingJobSpec, *, owner: str = "", key: str = "") -> Job:
        """A job that waits for a slot however busy the trainer is (the jobs API)."""
        job = self._new(request, spec)
        job.owner, job.idempotency_key = owner, key
        return job

    def _new(self, request: TrainingConfig, spec: TrainingJobSpec) -> Job:
        job_id = new_job_id(self.clock())
        while job_id in self._jobs:
            job_id = new_job_id(self.clock())
        job = Job(job_id=job_id, request=request, spec=spec, created_at=self.clock(), clock=self.clock)
        self._jobs[job_id] = job
        self._current = job_id
        return job

    def add(self, job: Job) -> None:
        """Adds a job read back from disk (history across restarts)."""
        self._jobs[job.job_id] = job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"Training job {job_id} not found") from None

    def find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def current(self) -> Job | None:
        """The running job, else the most recent one (none after reset)."""
        running = self.active()
        if running:
            return running[-1]
        return self._jobs.get(self._current) if self._current else None

    def reset(self) -> None:
        running = self.active()
        if running:
            raise FailedPrecondition(f"A training job is running: {running[0].job_id}; stop it first")
        self._current = None

    def jobs(self) -> list[Job]:
        """Newest first."""
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)
