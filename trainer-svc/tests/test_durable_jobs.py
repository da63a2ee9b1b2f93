"""Durable jobs in one trainer, with an in-memory job store (compare-and-set like registry-svc's) and
queue: submit records and queues a job, a delivery claims it once and acknowledges it only at a
terminal state, the record follows the job, a redelivery after a replica died continues the event
sequence, and a job out of attempts or still running elsewhere is not run again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition, Unavailable
from modelforge_common.logging import request_id_var
from modelforge_common.testing import eventually
from modelforge_common.tracing import deadline_var
from modelforge_trainer.jobs import EventKind, JobRegistry, JobStatus
from modelforge_trainer.ports import ModelRecord
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.recorder import RecordingStoreSink
from modelforge_trainer.runner import JobPaths, JobRunner, write_registration
from modelforge_trainer.service import DurableJobs, TrainerService
from modelforge_trainer.testing import FakeRegistrar, MemoryJobStore, service_with_fakes

pytestmark = pytest.mark.timeout(120)


@dataclass
class MemoryQueue:
    queued: list[str] = field(default_factory=list)
    stop_requests: list[str] = field(default_factory=list)
    published_seq: dict[str, int] = field(default_factory=dict)
    elsewhere: set[str] = field(default_factory=set)

    async def enqueue(self, job_id: str) -> None:
        self.queued.append(job_id)

    async def request_stop(self, job_id: str) -> bool:
        self.stop_requests.append(job_id)
        return job_id in self.elsewhere  # a live replica runs it and answers

    async def running_elsewhere(self, job_id: str) -> bool:
        return job_id in self.elsewhere

    async def last_event_seq(self, job_id: str) -> int:
        return self.published_seq.get(job_id, 0)


@dataclass
class FakeDelivery:
    job_id: str
    redelivered: bool = False
    acks: int = 0

    async def in_progress(self) -> None:
        return None

    async def ack(self) -> bool:
        self.acks += 1
        return True


@dataclass
class Durable:
    service: TrainerService
    store: MemoryJobStore
    queue: MemoryQueue
    sink: RecordingSink
    registrar: FakeRegistrar


@pytest.fixture
def durable(data_dir: Path, chat_dataset: Path, fake_worker_command: list[str]) -> Durable:
    paths = JobPaths(data_dir)
    jobs = JobRegistry()
    store, queue, sink, registrar = MemoryJobStore(), MemoryQueue(), RecordingSink(), FakeRegistrar()
    recorder = RecordingStoreSink(
        sink, store, jobs.find, paths.checkpoint_dir, replica="replica-a", progress_interval_s=0
    )
    runner = JobRunner(recorder, registrar, paths, stop_grace_s=5, worker_command=fake_worker_command)
    service = service_with_fakes(paths, runner, {"chat.jsonl": chat_dataset}, jobs=jobs, durable=DurableJobs(
        store=store, queue=queue, recorder=recorder, announce=sink, replica="replica-a", max_attempts=2
    ))
    return Durable(service, store, queue, sink, registrar)


def request(model_dir: Path, scenario: str = "complete") -> TrainingConfig:
    return TrainingConfig(task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", name=scenario)


async def test_submit_records_and_queues_once_per_idempotency_key(durable: Durable, model_dir: Path) -> None:
    job, created = await durable.service.submit(request(model_dir), idempotency_key="k1", owner="alice")
    again, created_again = await durable.service.submit(request(model_dir), idempotency_key="k1")

    assert created and not created_again and again.job_id == job.job_id
    assert durable.queue.queued == [job.job_id]
    record = durable.store.records[job.job_id]
    assert (record.status, record.owner, record.idempotency_key) == ("queued", "alice", "k1")
    assert record.request["config"]["model_name"] == str(model_dir)
    assert durable.service.free_slots() == 1  # queued in the shared queue, not in this replica's slot


async def test_a_delivery_runs_the_job_once_and_acks_at_its_terminal_state(durable: Durable, model_dir: Path) -> None:
    job, _ = await durable.service.submit(request(model_dir))
    delivery = FakeDelivery(job.job_id)
    running = durable.service.take_delivery(delivery)
    assert durable.service.free_slots() == 0  # the slot is taken as the message arrives
    duplicate = FakeDelivery(job.job_id)  # the same message again, not a redelivery: nothing runs
    async with asyncio.timeout(60):
        await running
        await durable.service.take_delivery(duplicate)

    record = durable.store.records[job.job_id]
    assert (record.status, record.attempts, record.replica) == ("completed", 1, "replica-a")
    assert record.model_id == "model_1" and record.progress == 100.0
    assert record.last_seq == durable.sink.events[-1].seq
    assert (delivery.acks, duplicate.acks, len(durable.registrar.records)) == (1, 1, 1)
    seqs = [event.seq for event in durable.sink.events]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_redelivery_continues_the_sequence_and_counts_the_attempt(durable: Durable, model_dir: Path) -> None:
    job, _ = await durable.service.submit(request(model_dir))
    # Another replica claimed it, published up to seq 7 and died.
    await durable.store.update_job(job.job_id, {"status": "running", "attempts": 1, "replica": "replica-b"})
    durable.queue.published_seq[job.job_id] = 7
    delivery = FakeDelivery(job.job_id, redelivered=True)
    async with asyncio.timeout(60):
        await durable.service.take_delivery(delivery)

    record = durable.store.records[job.job_id]
    assert (record.status, record.attempts, record.replica, delivery.acks) == ("completed", 2, "replica-a", 1)
    later = [event for event in durable.sink.events if event.seq > 1]
    assert later[0].seq == 8 and "attempt 2" in later[0].message


async def test_no_rerun_past_max_attempts_or_while_its_replica_lives(durable: Durable, model_dir: Path) -> None:
    tired, _ = await durable.service.submit(request(model_dir))
    await durable.store.update_job(tired.job_id, {"status": "running", "attempts": 2})
    alive, _ = await durable.service.submit(request(model_dir))
    await durable.store.update_job(alive.job_id, {"status": "running", "attempts": 1})
    durable.queue.elsewhere.add(alive.job_id)

    out_of_attempts, still_running = FakeDelivery(tired.job_id, True), FakeDelivery(alive.job_id, True)
    await durable.service.take_delivery(out_of_attempts)
    await durable.service.take_delivery(still_running)

    assert durable.store.records[tired.job_id].status == "error"
    assert "MODELFORGE_JOB_MAX_ATTEMPTS" in durable.store.records[tired.job_id].error
    assert out_of_attempts.acks == 1
    assert (durable.store.records[alive.job_id].status, still_running.acks) == ("running", 0)
    assert durable.registrar.records == []


async def test_other_replicas_jobs_are_read_and_cancelled_through_the_record(durable: Durable, model_dir: Path) -> None:
    queued, _ = await durable.service.submit(request(model_dir))
    elsewhere, _ = await durable.service.submit(request(model_dir))
    await durable.store.update_job(elsewhere.job_id, {"status": "running", "replica": "replica-b"})
    durable.queue.elsewhere.add(elsewhere.job_id)

    cancelled = await durable.service.stop(queued.job_id, wait_s=1)
    asked = await durable.service.stop(elsewhere.job_id, wait_s=1)
    cancelled_delivery = FakeDelivery(queued.job_id)
    await durable.service.take_delivery(cancelled_delivery)

    assert cancelled.status is JobStatus.STOPPED and durable.store.records[queued.job_id].status == "stopped"
    assert cancelled_delivery.acks == 1  # a cancelled job's message is dropped, nothing runs
    assert asked.status is JobStatus.RUNNING and durable.queue.stop_requests == [elsewhere.job_id]
    looked_up = await durable.service.lookup(elsewhere.job_id)
    assert looked_up is not None and looked_up.status is JobStatus.RUNNING
    listed, total = await durable.service.list_of_record([JobStatus.STOPPED])
    assert total == 1 and listed[0].job_id == queued.job_id
    stopped_events = [e for e in durable.sink.events if e.job_id == queued.job_id and e.kind is EventKind.STATUS]
    assert [e.status for e in stopped_events] == [JobStatus.QUEUED, JobStatus.STOPPED]


async def test_the_seed_start_takes_the_jobs_path_and_conflicts_with_a_job_in_progress_anywhere(
    durable: Durable, model_dir: Path
) -> None:
    started = await durable.service.start(request(model_dir))
    record = durable.store.records[started.job_id]
    assert (started.status, record.status, durable.queue.queued) == (JobStatus.QUEUED, "queued", [started.job_id])
    assert durable.service.free_slots() == 1  # it runs wherever the queue delivers it, here too

    with pytest.raises(FailedPrecondition, match=f"already running: {started.job_id}"):
        await durable.service.start(request(model_dir))
    # Any replica's job in progress counts, in whatever state of record it is.
    await durable.store.update_job(started.job_id, {"status": "registering", "replica": "replica-b"})
    with pytest.raises(FailedPrecondition, match=started.job_id):
        await durable.service.start(request(model_dir))
    looked_up = await durable.service.lookup("")  # status without a job id: the job in progress anywhere
    assert looked_up is not None and (looked_up.job_id, looked_up.status) == (started.job_id, JobStatus.REGISTERING)

    await durable.store.update_job(started.job_id, {"status": "completed"})
    again = await durable.service.start(request(model_dir))
    delivery = FakeDelivery(again.job_id)
    async with asyncio.timeout(60):
        await durable.service.take_delivery(delivery)
    assert durable.store.records[again.job_id].status == "completed" and delivery.acks == 1
    assert len(durable.queue.queued) == 2 == len({*durable.queue.queued})


async def test_stopping_a_job_whose_replica_is_gone_says_what_happened(durable: Durable, model_dir: Path) -> None:
    orphaned, _ = await durable.service.submit(request(model_dir))
    await durable.store.update_job(orphaned.job_id, {"status": "running", "replica": "replica-dead"})

    answered = await durable.service.stop("", wait_s=1)  # the job in progress, wherever it runs

    assert durable.queue.stop_requests == [orphaned.job_id]  # asked first; no replica answered
    assert answered.status is JobStatus.STOPPED and "replica running it was gone" in answered.message
    assert durable.store.records[orphaned.job_id].status == "stopped"
    stopped = [e for e in durable.sink.events if e.job_id == orphaned.job_id and e.status is JobStatus.STOPPED]
    assert len(stopped) == 1 and stopped[0].seq == answered.last_seq
    with pytest.raises(FailedPrecondition, match="No training job is running"):
        await durable.service.stop("", wait_s=1)


async def test_a_redelivered_job_left_registering_is_registered_by_the_next_replica(
    durable: Durable, model_dir: Path
) -> None:
    job, _ = await durable.service.submit(request(model_dir))
    await durable.store.update_job(job.job_id, {"status": "registering", "attempts": 1, "replica": "replica-dead"})
    # What the dead replica left: its trained model's record (runner.write_registration).
    record = ModelRecord(
        name="left", base_model=str(model_dir), task="text-generation", strategy="sft", provider="huggingface",
        path=str(durable.service.paths.model_dir(job.job_id)), config={}, training_params={},
        metrics={"final_loss": 0.25}, job_id=job.job_id,
    )
    durable.service.paths.job_dir(job.job_id).mkdir(parents=True)
    write_registration(record, durable.service.paths.registration_file(job.job_id))

    delivery = FakeDelivery(job.job_id, redelivered=True)
    async with asyncio.timeout(60):
        await durable.service.take_delivery(delivery)

    stored = durable.store.records[job.job_id]
    assert (stored.status, stored.model_id, stored.attempts, delivery.acks) == ("completed", "model_1", 1, 1)
    assert [r.name for r in durable.registrar.records] == ["left"]


class WitnessRegistrar(FakeRegistrar):
    """Records the request id and call deadline in effect when the model is registered."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float | None]] = []

    async def register_model(self, record: ModelRecord) -> str:
        self.seen.append((request_id_var.get(), deadline_var.get()))
        return await super().register_model(record)


async def test_a_job_calls_the_registry_with_its_request_id_and_without_the_submitting_calls_deadline(
    durable: Durable, model_dir: Path
) -> None:
    witness = WitnessRegistrar()
    durable.service.runner.registrar = witness

    async def submit_in_a_call() -> str:
        # As inside SubmitTrainingJob: the caller's request id and a deadline that passes long
        # before the job ends.
        request_id_var.set("req-14")
        deadline_var.set(time.monotonic() + 0.01)
        job, _ = await durable.service.submit(request(model_dir))
        return job.job_id

    job_id = await asyncio.create_task(submit_in_a_call())
    async with asyncio.timeout(60):
        await durable.service.take_delivery(FakeDelivery(job_id))  # the queue consumer: no call context

    assert durable.store.records[job_id].status == "completed"
    assert witness.seen == [("req-14", None)]


class HeldEndStore(MemoryJobStore):
    """Holds the write that records a job's end until `release` is set (a slow registry), or fails it
    with Unavailable while `down` (a registry outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.down = False

    async def update_job(self, job_id: str, changes: dict[str, Any], expected_statuses: Collection[str] = ()) -> Any:
        if changes.get("status") in {status.value for status in JobStatus if status.terminal}:
            if self.down:
                raise Unavailable("registry-svc is unreachable")
            await self.release.wait()
        return await super().update_job(job_id, changes, expected_statuses)


def ended_here(durable: Durable, job_id: str) -> bool:
    job = durable.service.jobs.find(job_id)
    return job is not None and job.status.terminal


def durable_over(store: MemoryJobStore, data_dir: Path, chat_dataset: Path, worker: list[str]) -> Durable:
    paths, jobs, queue = JobPaths(data_dir), JobRegistry(), MemoryQueue()
    sink, registrar = RecordingSink(), FakeRegistrar()
    recorder = RecordingStoreSink(sink, store, jobs.find, paths.checkpoint_dir, replica="replica-a",
                                  progress_interval_s=0, retry_s=0.05)
    runner = JobRunner(recorder, registrar, paths, stop_grace_s=5, worker_command=worker)
    service = service_with_fakes(paths, runner, {"chat.jsonl": chat_dataset}, jobs=jobs, durable=DurableJobs(
        store=store, queue=queue, recorder=recorder, announce=sink, replica="replica-a"
    ))
    return Durable(service, store, queue, sink, registrar)


async def test_a_job_is_answered_ended_only_once_its_record_says_so(
    data_dir: Path, chat_dataset: Path, fake_worker_command: list[str], model_dir: Path
) -> None:
    store = HeldEndStore()
    durable = durable_over(store, data_dir, chat_dataset, fake_worker_command)
    job, _ = await durable.service.submit(request(model_dir))
    running = asyncio.ensure_future(durable.service.take_delivery(FakeDelivery(job.job_id)))
    await eventually(lambda: ended_here(durable, job.job_id), timeout_s=60)
    # Ended here, not yet in the registry: a status answer waits for the record (what the registry
    # decides, such as whether a dataset is still in use, must agree with what the caller is told).
    answer = asyncio.ensure_future(durable.service.lookup(job.job_id))
    await asyncio.sleep(0.3)
    assert not answer.done() and store.records[job.job_id].status == "running"
    store.release.set()
    async with asyncio.timeout(10):
        ended = await answer
        await running
    assert ended is not None and ended.status.terminal
    assert store.records[job.job_id].status == ended.status.value


async def test_with_the_registry_down_an_ended_job_is_answered_at_once(
    data_dir: Path, chat_dataset: Path, fake_worker_command: list[str], model_dir: Path
) -> None:
    store = HeldEndStore()
    store.down = True
    durable = durable_over(store, data_dir, chat_dataset, fake_worker_command)
    job, _ = await durable.service.submit(request(model_dir))
    running = asyncio.ensure_future(durable.service.take_delivery(FakeDelivery(job.job_id)))
    await eventually(lambda: ended_here(durable, job.job_id), timeout_s=60)
    recorder = durable.service.durable.recorder if durable.service.durable is not None else None
    assert recorder is not None
    await eventually(lambda: recorder.retrying, timeout_s=60)
    started = time.monotonic()
    ended = await durable.service.lookup(job.job_id)
    assert ended is not None and ended.status.terminal
    assert time.monotonic() - started < 1.0  # it did not wait out RECORD_WAIT_S for a registry that is down
    store.down = False
    store.release.set()
    async with asyncio.timeout(30):
        await running  # the record catches up once the registry is back, then the delivery is acknowledged
    assert store.records[job.job_id].status == ended.status.value
