"""A status request without a job id, with durable jobs and nothing running here: one ListJobs
(in progress first) answers it as the two calls before did: the newest job in progress anywhere
(less those this replica saw end), else the newest job, none of them from before a reset."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelforge_trainer.config import Hyperparameters
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.jobs import JobRegistry, JobStatus
from modelforge_trainer.ports import JobRecord
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths, JobRunner
from modelforge_trainer.service import DurableJobs, TrainerService, job_of_record
from modelforge_trainer.status_lookup import IN_PROGRESS, STATUS_LOOKUP_PAGE, current_of_record
from modelforge_trainer.testing import FakeDatasets, FakeRegistrar, MemoryJobStore

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class UnusedQueue:
    """The lookup never touches the queue."""

    async def enqueue(self, job_id: str) -> None:
        raise AssertionError("not expected")

    async def request_stop(self, job_id: str) -> bool:
        raise AssertionError("not expected")

    async def running_elsewhere(self, job_id: str) -> bool:
        raise AssertionError("not expected")

    async def last_event_seq(self, job_id: str) -> int:
        raise AssertionError("not expected")


class Flushed:
    """A recorder with nothing left to write."""

    retrying = False

    async def flush(self, timeout_s: float) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


def make_service(tmp_path: Path, store: MemoryJobStore, clock: Clock) -> TrainerService:
    paths = JobPaths(tmp_path / "data")
    sink = RecordingSink()
    runner = JobRunner(sink, FakeRegistrar(), paths, stop_grace_s=1, worker_command=["false"])
    return TrainerService(
        jobs=JobRegistry(clock=clock),
        runner=runner,
        datasets=FakeDatasets(),
        estimator=None,
        defaults=Hyperparameters(),
        device=DeviceInfo(),
        paths=paths,
        durable=DurableJobs(store=store, queue=UnusedQueue(), recorder=Flushed(), announce=sink, replica="here"),
    )


async def add(store: MemoryJobStore, job_id: str, status: str, minutes: int) -> JobRecord:
    record = JobRecord(job_id=job_id, status=status, replica="elsewhere")
    record.queued_at.FromDatetime(T0 + timedelta(minutes=minutes))
    await store.create_job(record)
    return record


def ended_here(service: TrainerService, record: JobRecord) -> None:
    """This replica ran the job and saw it end; its final record is not written yet."""
    local = job_of_record(record)
    local.status = JobStatus.COMPLETED
    service.jobs.add(local)


@pytest.fixture
def store() -> MemoryJobStore:
    return MemoryJobStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, store: MemoryJobStore, clock: Clock) -> TrainerService:
    return make_service(tmp_path, store, clock)


async def lookup_once(service: TrainerService, store: MemoryJobStore) -> tuple[str, JobStatus] | None:
    """lookup("") and that it asked the registry once."""
    before = store.list_calls
    job = await service.lookup("")
    assert store.list_calls - before == 1
    return None if job is None else (job.job_id, job.status)


async def test_an_idle_platform_costs_one_registry_call(service: TrainerService, store: MemoryJobStore) -> None:
    assert await lookup_once(service, store) is None


async def test_none_in_progress_answers_the_newest_job(service: TrainerService, store: MemoryJobStore) -> None:
    await add(store, "j1", "completed", 1)
    await add(store, "j3", "error", 3)
    await add(store, "j2", "stopped", 2)
    assert await lookup_once(service, store) == ("j3", JobStatus.ERROR)


async def test_a_job_in_progress_elsewhere_comes_before_newer_finished_ones(
    service: TrainerService, store: MemoryJobStore
) -> None:
    await add(store, "old_running", "running", 1)
    await add(store, "older_queued", "queued", 0)
    await add(store, "newer_done", "completed", 5)
    assert await lookup_once(service, store) == ("old_running", JobStatus.RUNNING)
    await store.update_job("old_running", {"status": "registering"})
    assert await lookup_once(service, store) == ("old_running", JobStatus.REGISTERING)


async def test_a_job_this_replica_saw_end_is_skipped_while_its_record_is_in_progress(
    service: TrainerService, store: MemoryJobStore
) -> None:
    ended_here(service, await add(store, "ended_here", "running", 4))
    await add(store, "done", "completed", 3)
    # Nothing else in progress: the newest job, here the one that ended (this replica's view of it).
    assert await lookup_once(service, store) == ("ended_here", JobStatus.COMPLETED)
    await add(store, "queued_elsewhere", "queued", 2)
    assert await lookup_once(service, store) == ("queued_elsewhere", JobStatus.QUEUED)
    await store.update_job("queued_elsewhere", {"status": "stopped"})
    await add(store, "newest_done", "completed", 6)
    assert await lookup_once(service, store) == ("newest_done", JobStatus.COMPLETED)


async def test_a_full_page_of_jobs_ended_here_reads_on(service: TrainerService, store: MemoryJobStore) -> None:
    await add(store, "running_elsewhere", "running", 0)
    for number in range(STATUS_LOOKUP_PAGE):
        ended_here(service, await add(store, f"ended_{number}", "running", 10 + number))
    job = await service.lookup("")
    assert job is not None and (job.job_id, store.list_calls) == ("running_elsewhere", 2)


async def test_jobs_from_before_a_reset_are_not_returned(
    service: TrainerService, store: MemoryJobStore, clock: Clock
) -> None:
    await add(store, "before_done", "completed", 1)
    await add(store, "before_running", "running", 2)
    service.reset()
    assert await lookup_once(service, store) is None
    await store.update_job("before_running", {"status": "completed"})
    assert await lookup_once(service, store) is None
    await add(store, "after", "completed", 61)  # queued after the reset (the clock is at T0 + 60 min)
    assert await lookup_once(service, store) == ("after", JobStatus.COMPLETED)


async def test_one_call_answers_as_the_two_calls_did_in_any_state() -> None:
    """Against the former lookup: ListJobs(in progress) less the jobs ended here, else ListJobs(any, 1)."""
    statuses = (*IN_PROGRESS, "completed", "error", "stopped")
    rng = random.Random(7)
    for _ in range(300):
        store = MemoryJobStore()
        ended: set[str] = set()
        for number, minutes in enumerate(rng.sample(range(100), rng.randint(0, 9))):
            record = await add(store, f"j{number}", rng.choice(statuses), minutes)
            if record.status in IN_PROGRESS and rng.random() < 0.5:
                ended.add(record.job_id)
        in_progress, _ = await store.list_jobs(IN_PROGRESS, 0, 0)
        in_progress = [record for record in in_progress if record.job_id not in ended]
        newest, _ = await store.list_jobs((), 1, 0)
        expected = (in_progress or newest)[0] if in_progress or newest else None

        store.list_calls = 0
        found = await current_of_record(store, ended.__contains__)
        assert found == expected
        assert store.list_calls == 1 or len(ended) >= STATUS_LOOKUP_PAGE
