"""The trainer's use cases: start, status, stop, reset, list. Plain Python over the job registry, the
runner and the ports; the gRPC servicer only converts messages around these calls."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from modelforge_common.logging import request_id_var
from modelforge_trainer.background import start_detached
from modelforge_trainer.config import Hyperparameters
from modelforge_trainer.convert import record_changes, record_request, record_time
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.jobs import Job, JobRegistry, JobStatus, new_job_id
from modelforge_trainer.ports import DatasetLookup, Delivery, JobQueue, JobRecord, JobStore, MemoryEstimator
from modelforge_trainer.publisher import FlushableSink
from modelforge_trainer.runner import JobPaths, JobRunner
from modelforge_trainer.status_lookup import IN_PROGRESS, current_of_record
from modelforge_trainer.validation import LOCAL_BACKEND, validate_request
from modelforge_training.checkpoints import latest_checkpoint
from modelforge_training.spec import TrainingJobSpec, apply_recorded, recorded_config

JOB_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
log = logging.getLogger(__name__)
_STILL_RUNNING = object()  # a delivery whose job a live replica still runs: leave the message alone
# How long a status answer waits at most for the registry to record that a job ended (normally
# milliseconds). With the registry down it does not wait: the record catches up when it is back.
RECORD_WAIT_S = 2.0


class Recorder(Protocol):
    """What the service needs of the recorder (recorder.RecordingStoreSink)."""

    async def flush(self, timeout_s: float) -> bool:
        """True once every job change so far is written to the registry."""
        ...

    @property
    def retrying(self) -> bool:
        """Whether the last write failed for want of the registry (its changes are kept and retried)."""
        ...


@dataclass
class DurableJobs:
    """Job state of record in registry-svc and the shared queue: with it, the jobs API queues on
    every replica, any replica answers for any job, and a job outlives the replica that ran it."""

    store: JobStore
    queue: JobQueue
    recorder: Recorder
    # Publishes events of jobs that do not run here, straight to NATS: their record is already
    # written, and a late write through the recorder could undo another replica's claim.
    announce: FlushableSink
    replica: str
    max_attempts: int = 3
    # In-progress acks while a job trains: well inside the queue's ack_wait.
    heartbeat_s: float = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


def job_of_record(record: JobRecord) -> Job:
    """A job as another replica (or an earlier life of this one) left it in the registry."""
    saved = record_request(record)
    request = TrainingConfig(force=bool(saved.get("force", False)))
    spec = TrainingJobSpec()
    apply_recorded(spec, saved.get("config", {}))
    job = Job(
        job_id=record.job_id,
        request=request,
        spec=spec,
        status=JobStatus(record.status),
        progress=record.progress,
        error=record.error,
        model_id=record.model_id,
        created_at=record_time(record, "queued_at") or _now(),
        started_at=record_time(record, "started_at"),
        finished_at=record_time(record, "finished_at"),
        last_seq=record.last_seq,
        owner=record.owner,
        idempotency_key=record.idempotency_key,
        attempts=record.attempts,
    )
    job.message = {
        JobStatus.QUEUED: "Queued, waiting for a free training slot",
        JobStatus.RUNNING: f"Training on {record.replica or 'a trainer replica'}",
        JobStatus.COMPLETED: "Training completed successfully",
        JobStatus.ERROR: "Training failed",
        JobStatus.STOPPED: "Stopped",
        JobStatus.REGISTERING: "Training finished; registering the model",
    }[job.status]
    return job


def record_of(job: Job, resume_checkpoint: str) -> JobRecord:
    request = json_format.MessageToDict(job.request, preserving_proto_field_name=True)
    return record_changes(job.job_id, {
        "status": job.status.value,
        "idempotency_key": job.idempotency_key,
        "request": {
            **request,
            "config": recorded_config(job.spec),
            "resume_checkpoint": resume_checkpoint,
            # The submitting call's request id: the replica that runs the job sends it on.
            "request_id": request_id_var.get(),
        },
        "owner": job.owner,
        "queued_at": job.created_at,
        "last_seq": job.last_seq,
    })


class TrainerService:
    def __init__(
        self,
        *,
        jobs: JobRegistry,
        runner: JobRunner,
        datasets: DatasetLookup,
        estimator: MemoryEstimator | None,
        defaults: Hyperparameters,
        device: DeviceInfo,
        paths: JobPaths,
        durable: DurableJobs | None = None,
        backend: str = LOCAL_BACKEND,
    ) -> None:
        self.jobs = jobs
        # Where jobs run: "local" (this trainer's processes) or "kubeflow" (TrainJobs; num_nodes > 1).
        self.backend = backend
        self.runner = runner
        self.datasets = datasets
        self.estimator = estimator
        self.defaults = defaults
        self.device = device
        self.paths = paths
        self._shutting_down = False
        self._resume_from: dict[str, str] = {}  # queued job -> checkpoint it resumes from
        self.durable = durable
        self._claiming: set[str] = set()  # deliveries taken from the queue, not yet running here
        self._stopping: set[asyncio.Future[None]] = set()
        self._seed_start = asyncio.Lock()
        # When status requests without a job id last forgot the jobs before (reset).
        self._reset_at: datetime | None = None
        runner.on_finished = lambda _job: self._dispatch()

    async def start(self, request: TrainingConfig) -> Job:
        """The seed start: refused (FailedPrecondition) while a job is in progress. With durable
        jobs it is recorded and queued like submit() and returned QUEUED; else validated, then
        started in the background and returned RUNNING."""
        if self.durable is not None:
            return await self._start_durable(request)
        self.jobs.ensure_capacity()
        spec = await self._validate(request)
        resume = self._resume_checkpoint(request.resume_from_job or "", spec.config)
        job = self.jobs.create(request, spec)  # checks capacity again: validation awaited
        self.runner.launch(job, resume)
        return job

    async def _start_durable(self, request: TrainingConfig) -> Job:
        """The seed start with durable jobs: the same record and queue as the jobs API (so a replica
        that dies running it leaves it to be redelivered), refused while any job is in progress."""
        assert self.durable is not None
        async with self._seed_start:  # two starts through this replica: the second sees the first
            await self._ensure_nothing_in_progress()
            job, _ = await self._submit_durable(request, "", "")
            return job

    async def _ensure_nothing_in_progress(self) -> None:
        self.jobs.ensure_capacity()
        records = await self._in_progress_of_record()
        if records:
            raise FailedPrecondition(f"A training job is already running: {records[0].job_id}")

    async def _in_progress_of_record(self) -> list[JobRecord]:
        """Jobs the registry has in progress, newest first, less those this replica saw end (their
        final record may still be on its way)."""
        assert self.durable is not None
        records, _ = await self.durable.store.list_jobs(IN_PROGRESS, 0, 0)
        return [record for record in records if not self._ended_here(record.job_id)]

    async def submit(self, request: TrainingConfig, *, idempotency_key: str = "", owner: str = "") -> tuple[Job, bool]:
        """Validates and queues a job (the jobs API): it starts when a slot is free, oldest first.
        A repeated idempotency key returns the job it created, with False."""
        if self.durable is not None:
            return await self._submit_durable(request, idempotency_key, owner)
        known = self.jobs.by_idempotency_key(idempotency_key)
        if known is not None:
            return known, False
        spec = await self._validate(request)
        resume = self._resume_checkpoint(request.resume_from_job or "", spec.config)
        known = self.jobs.by_idempotency_key(idempotency_key)  # a twin request may have won meanwhile
        if known is not None:
            return known, False
        job = self.jobs.enqueue(request, spec, owner=owner, key=idempotency_key)
        self._resume_from[job.job_id] = resume
        self.runner.sink.publish(job.mark_queued())
        self._dispatch()
        return job, True

    async def _validate(self, request: TrainingConfig) -> TrainingJobSpec:
        return await validate_request(
            request,
            self.defaults,
            data_dir=self.paths.data_dir,
            device=self.device,
            datasets=self.datasets,
            estimator=self.estimator,
            backend=self.backend,
        )

    async def _submit_durable(self, request: TrainingConfig, idempotency_key: str, owner: str) -> tuple[Job, bool]:
        assert self.durable is not None
        spec = await self._validate(request)
        resume = self._resume_checkpoint(request.resume_from_job or "", spec.config)
        job = Job(job_id=new_job_id(self.jobs.clock()), request=request, spec=spec, clock=self.jobs.clock)
        job.owner, job.idempotency_key = owner, idempotency_key
        queued = job.mark_queued()
        stored, created = await self.durable.store.create_job(record_of(job, resume))
        if not created:
            return self._known(stored), False
        self.durable.announce.publish(queued)
        # Stored before any replica can take the job, so its seq 1 never follows seq 2 in the stream.
        await self.durable.announce.flush(5.0)
        try:
            await self.durable.queue.enqueue(job.job_id)
        except Exception:
            # Not queued: say so in the record rather than leave a job that never runs.
            await self.durable.store.update_job(
                job.job_id,
                {"status": "error", "error": "could not be queued (NATS unreachable)", "finished_at": _now()},
            )
            raise
        return job, True

    def _ended_here(self, job_id: str) -> bool:
        """A job this replica saw end (its final record may still be on its way to the registry)."""
        local = self.jobs.find(job_id)
        return local is not None and not local.active

    def _known(self, record: JobRecord) -> Job:
        """This replica's live view of a job when it runs here, else the record."""
        local = self.jobs.find(record.job_id)
        return local if local is not None else job_of_record(record)

    def free_slots(self) -> int:
        if self._shutting_down:
            return 0
        return self.jobs.max_concurrent_jobs - len(self.jobs.active()) - len(self._claiming)

    def take_delivery(self, delivery: Delivery) -> Awaitable[None]:
        """Called as a queued job's message arrives: the slot is taken now; the returned awaitable
        runs the job and acknowledges the message once the job reached a terminal state."""
        self._claiming.add(delivery.job_id)
        return self._run_delivery(delivery)

    async def _run_delivery(self, delivery: Delivery) -> None:
        assert self.durable is not None
        try:
            job = await self._claim(delivery)
        except Exception:
            self._claiming.discard(delivery.job_id)
            log.exception("claiming job %s failed; it will be redelivered", delivery.job_id)
            return
        self._claiming.discard(delivery.job_id)
        if job is _STILL_RUNNING:
            return  # its replica lives and will acknowledge it
        if isinstance(job, Job):
            finished = asyncio.ensure_future(self.runner.wait(job.job_id))
            while not finished.done():
                await asyncio.wait({finished}, timeout=self.durable.heartbeat_s)
                if not finished.done():
                    await delivery.in_progress()
        if not await self.durable.recorder.flush(30.0):
            return  # the record is not final yet: leave the message to be redelivered
        await delivery.ack()

    async def _claim(self, delivery: Delivery) -> Job | object | None:
        """Moves the job to running on this replica (a compare-and-set in the registry, so it never
        runs twice) and launches it; None when there is nothing to run."""
        assert self.durable is not None
        durable = self.durable
        try:
            record = await durable.store.get_job(delivery.job_id)
        except NotFound:
            log.warning("queued job %s has no record; dropping it", delivery.job_id)
            return None
        if JobStatus(record.status).terminal:
            return None
        # A redelivery means the replica that ran it is gone (it sent no in-progress ack in time).
        expected = ("queued", "running", "registering") if delivery.redelivered else ("queued",)
        if record.status not in expected:
            return None
        if record.status != "queued" and await durable.queue.running_elsewhere(record.job_id):
            return _STILL_RUNNING
        job = job_of_record(record)
        job.last_seq = max(record.last_seq, await durable.queue.last_event_seq(job.job_id))
        if record.status == "registering":
            return await self._take_over_registration(job)
        if record.attempts >= durable.max_attempts:
            error = f"Training was interrupted {record.attempts} times (MODELFORGE_JOB_MAX_ATTEMPTS); giving up"
            try:
                await durable.store.update_job(
                    job.job_id, {"status": "error", "error": error, "finished_at": _now()}, expected
                )
            except FailedPrecondition:
                return None
            self.jobs.add(job)
            durable.announce.publish(job.fail(error))
            return None
        try:
            await durable.store.update_job(
                job.job_id,
                {
                    "status": "running",
                    "replica": durable.replica,
                    "attempts": record.attempts + 1,
                    "started_at": _now(),
                },
                expected,
            )
        except FailedPrecondition:
            return None  # another replica got it first, or it was cancelled meanwhile
        job.status = JobStatus.QUEUED  # mark_running below counts the attempt and publishes the change
        self.jobs.add(job)
        checkpoint = latest_checkpoint(self.paths.checkpoint_dir(job.job_id))
        resume = str(checkpoint) if checkpoint is not None else str(record_request(record).get("resume_checkpoint", ""))
        message = "Training started"
        if record.attempts:
            message = f"Training restarted on {durable.replica} (attempt {record.attempts + 1})"
            if checkpoint is not None:
                message += f", resuming from {checkpoint.name}"
        self.runner.launch(job, resume, message, request_id=str(record_request(record).get("request_id", "")))
        return job

    async def _take_over_registration(self, job: Job) -> Job | None:
        """A job whose replica died after training, while registering its model: register it here."""
        assert self.durable is not None
        try:
            await self.durable.store.update_job(job.job_id, {"replica": self.durable.replica}, ("registering",))
        except FailedPrecondition:
            return None
        self.jobs.add(job)
        if self.runner.resume_registration(job):
            log.info("taking over the registration of job %s's model", job.job_id)
            return job
        self.runner.sink.publish(job.fail("Training finished but its replica died before the model was registered"))
        return None

    def runs_here(self, job_id: str) -> bool:
        job = self.jobs.find(job_id)
        return job is not None and job.status in (JobStatus.RUNNING, JobStatus.REGISTERING)

    def stop_requested(self, job_id: str) -> None:
        """Another replica asked to stop a job; this one acts if it runs it."""
        job = self.jobs.find(job_id)
        if job is not None and job.active and job.status is JobStatus.RUNNING:
            stopping = start_detached(self.runner.stop(job, 0), name=f"stop-{job_id}")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    def _dispatch(self) -> None:
        """Starts queued jobs while slots are free."""
        while not self._shutting_down and len(self._holding_slots()) < self.jobs.max_concurrent_jobs:
            job = self.jobs.next_queued()
            if job is None:
                return
            self.runner.launch(job, self._resume_from.pop(job.job_id, ""))

    def _holding_slots(self) -> list[Job]:
        return [job for job in self.jobs.active() if job.status is not JobStatus.QUEUED]

    def _resume_checkpoint(self, job_id: str, config: TrainingConfig) -> str:
        """The latest checkpoint of the job to resume; it must have trained the same model the same way."""
        if not job_id:
            return ""
        found: Path | None = None
        if JOB_ID.match(job_id):
            found = latest_checkpoint(self.paths.checkpoint_dir(job_id))
        message = f"No checkpoint to resume from for job {job_id}"
        earlier = self.jobs.find(job_id)
        if found is not None and earlier is not None:
            before = (earlier.spec.config.model_name, earlier.spec.config.task, earlier.spec.config.strategy)
            now = (config.model_name, config.task, config.strategy)
            if before != now:
                found = None
                message = (
                    f"Job {job_id} trained {before[0]} ({before[1]}, {before[2]}); "
                    "resume it with the same model_name, task and strategy"
                )
        if found is None:
            raise InvalidArgument(message, [FieldViolation("resume_from_job", message)])
        return str(found)

    def status(self, job_id: str = "") -> Job | None:
        """The named job (NotFound if unknown), else the running one, else the most recent one."""
        return self.jobs.get(job_id) if job_id else self.jobs.current()

    async def lookup(self, job_id: str = "") -> Job | None:
        """status(), and with the registry any replica's job: by id, or without one the job in
        progress anywhere, else the most recent one (none of those from before a reset)."""
        if self.durable is None or (job_id and self.jobs.find(job_id) is not None):
            found = self.status(job_id)
            return await self._as_recorded(found) if found is not None else None
        if job_id:
            return self._known(await self.durable.store.get_job(job_id))
        local = self.jobs.active()
        if local:
            return local[-1]
        record = await current_of_record(self.durable.store, self._ended_here)
        if record is None:
            return None
        if self._reset_at is not None and (record_time(record, "queued_at") or self._reset_at) <= self._reset_at:
            return None
        return self._known(record)

    async def stop(self, job_id: str, wait_s: float) -> Job:
        """Stops the named (or the running) job; waits up to wait_s for it to end and returns it as
        it is then (still running when the stop did not finish in time)."""
        if self.durable is not None and not job_id and not self.jobs.active():
            records = await self._in_progress_of_record()
            if not records:
                raise FailedPrecondition("No training job is running")
            job_id = records[0].job_id
        if job_id and self.durable is not None and self.jobs.find(job_id) is None:
            return await self._stop_elsewhere(job_id)
        if job_id:
            job = self.jobs.get(job_id)
            if not job.active:
                raise FailedPrecondition(f"Training job {job_id} is not running (status: {job.status.value})")
            if job.status is JobStatus.QUEUED:
                self.runner.sink.publish(job.cancel_queued())
                self._resume_from.pop(job.job_id, None)
                return await self._as_recorded(job)
        else:
            running = self.jobs.running() or self.jobs.active()
            if not running:
                raise FailedPrecondition("No training job is running")
            job = running[-1]
            if job.status is JobStatus.QUEUED:
                self.runner.sink.publish(job.cancel_queued())
                return await self._as_recorded(job)
        if job.status is JobStatus.REGISTERING:
            raise FailedPrecondition(f"Training job {job.job_id} has finished training; its model is being registered")
        await self.runner.stop(job, wait_s)
        return await self._as_recorded(job)

    async def _as_recorded(self, job: Job) -> Job:
        """`job` as this replica knows it; one that ended here only once the registry's record says so
        too (the recorder writes it a moment after the event). What is decided from the record, such as
        a dataset still in use or the jobs in progress, then agrees with what the caller was just told."""
        if self.durable is not None and job.status.terminal and not self.durable.recorder.retrying:
            await self.durable.recorder.flush(RECORD_WAIT_S)
        return job

    async def _stop_elsewhere(self, job_id: str) -> Job:
        """Cancels a queued job in the registry, or asks the replica running it to stop it."""
        assert self.durable is not None
        record = await self.durable.store.get_job(job_id)
        job = job_of_record(record)
        if job.status is JobStatus.QUEUED:
            try:
                await self.durable.store.update_job(
                    job_id, {"status": "stopped", "finished_at": _now()}, expected_statuses=("queued",)
                )
            except FailedPrecondition:
                return await self._stop_elsewhere(job_id)  # a replica claimed it meanwhile
            job.last_seq = max(record.last_seq, await self.durable.queue.last_event_seq(job_id))
            self.durable.announce.publish(job.cancel_queued())
            return job
        if not job.active:
            raise FailedPrecondition(f"Training job {job_id} is not running (status: {job.status.value})")
        if job.status is JobStatus.REGISTERING:
            raise FailedPrecondition(f"Training job {job_id} has finished training; its model is being registered")
        if await self.durable.queue.request_stop(job_id):
            job.message = "Stopping at the next step (saving a checkpoint)"
            return job
        # No live replica runs it: its trainer died (the worker with it). Say so in the record,
        # rather than answer "stopping" for a job nobody runs; its checkpoints stay for a resume.
        try:
            await self.durable.store.update_job(
                job_id, {"status": "stopped", "finished_at": _now()}, expected_statuses=(record.status,)
            )
        except FailedPrecondition:
            return await self._stop_elsewhere(job_id)  # a replica took it over meanwhile
        job.last_seq = max(record.last_seq, await self.durable.queue.last_event_seq(job_id))
        self.durable.announce.publish(
            job.mark_stopped("Stopped: the trainer replica running it was gone; resume it with resume_from_job")
        )
        return job

    def reset(self) -> None:
        self.jobs.reset()
        self._reset_at = self.jobs.clock()

    def list_jobs(self, statuses: Collection[JobStatus] = (), limit: int = 0, offset: int = 0) -> tuple[list[Job], int]:
        """Newest first, only the given states (all when none); the page and how many match."""
        matching = [job for job in self.jobs.jobs() if not statuses or job.status in statuses]
        end = offset + limit if limit > 0 else None
        return matching[offset:end], len(matching)

    async def list_of_record(
        self, statuses: Collection[JobStatus] = (), limit: int = 0, offset: int = 0
    ) -> tuple[list[Job], int]:
        """list_jobs(), from the registry (every replica's jobs) when there is one."""
        if self.durable is None:
            return self.list_jobs(statuses, limit, offset)
        records, total = await self.durable.store.list_jobs([s.value for s in statuses], limit, offset)
        return [self._known(record) for record in records], total

    async def shutdown(self, grace_s: float) -> None:
        self._shutting_down = True
        await self.runner.shutdown(self.jobs.active(), grace_s)
