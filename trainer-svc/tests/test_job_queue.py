"""The jobs API's queue inside one trainer: jobs wait for a free slot and start oldest first,
an idempotency key returns the job it created, a queued job cancels at once, the seed start is
refused while jobs wait, and the list filters by status."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition
from modelforge_trainer.jobs import EventKind, JobStatus
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.service import TrainerService

pytestmark = pytest.mark.timeout(120)


def request(model_dir: Path, scenario: str = "complete") -> TrainingConfig:
    """The fake worker acts out the scenario named by the job's name."""
    return TrainingConfig(task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", name=scenario)


async def test_jobs_wait_for_the_slot_and_run_in_order(service: TrainerService, model_dir: Path) -> None:
    first, created = await service.submit(request(model_dir, "hang"), idempotency_key="a", owner="alice")
    second, _ = await service.submit(request(model_dir), owner="bob")
    third, _ = await service.submit(request(model_dir))
    assert created and first.status is JobStatus.RUNNING
    assert (second.status, third.status) == (JobStatus.QUEUED, JobStatus.QUEUED)
    assert (first.owner, second.owner, first.attempts, second.attempts) == ("alice", "bob", 1, 0)

    again, created_again = await service.submit(request(model_dir, "hang"), idempotency_key="a")
    assert again is first and not created_again

    with pytest.raises(FailedPrecondition):
        await service.start(request(model_dir))  # the seed start still refuses while jobs wait

    waiting, total = service.list_jobs([JobStatus.QUEUED])
    assert total == 2 and {job.job_id for job in waiting} == {second.job_id, third.job_id}
    page, total_all = service.list_jobs(limit=1, offset=1)
    assert total_all == 3 and len(page) == 1

    cancelled = await service.stop(third.job_id, wait_s=5)
    assert cancelled.status is JobStatus.STOPPED and cancelled.attempts == 0
    await service.stop(first.job_id, wait_s=30)
    await service.runner.wait(second.job_id, 60)
    assert first.status is JobStatus.STOPPED
    assert second.status is JobStatus.COMPLETED and second.attempts == 1

    sink = service.runner.sink
    assert isinstance(sink, RecordingSink)
    for job in (first, second, third):
        seqs = [event.seq for event in sink.events if event.job_id == job.job_id]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free from the queued event on
        first_event = next(event for event in sink.events if event.job_id == job.job_id)
        assert (first_event.kind, first_event.status) == (EventKind.STATUS, JobStatus.QUEUED)
    # The queued job never reached a worker.
    assert not any(e.job_id == third.job_id and e.status is JobStatus.RUNNING for e in sink.events)


async def test_idempotent_twins_submitted_together_create_one_job(service: TrainerService, model_dir: Path) -> None:
    results = await asyncio.gather(*(service.submit(request(model_dir), idempotency_key="same") for _ in range(3)))
    assert len({job.job_id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    await service.runner.wait(results[0][0].job_id, 60)
