"""The domain service over the fake worker: start, resume checks, stop preconditions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition, InvalidArgument, NotFound
from modelforge_trainer.jobs import JobStatus
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths
from modelforge_trainer.service import TrainerService
from modelforge_training.spec import read_spec


def request(model_dir: Path, scenario: str = "complete", **fields: object) -> TrainingConfig:
    return TrainingConfig(
        task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", name=scenario, **fields
    )  # type: ignore[arg-type]


async def test_resume_needs_a_checkpoint(service: TrainerService, model_dir: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.start(request(model_dir, resume_from_job="train_20240101_000000_abcd"))
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("resume_from_job", "No checkpoint to resume from for job train_20240101_000000_abcd")
    ]


async def test_resume_hands_the_latest_checkpoint_to_the_worker(
    service: TrainerService, model_dir: Path, data_dir: Path
) -> None:
    earlier = await service.start(request(model_dir, "hang"))
    sink = service.runner.sink
    assert isinstance(sink, RecordingSink)
    async with asyncio.timeout(30):
        await sink.wait_until(lambda events: any(e.current_step == 1 for e in events))
    await service.stop(earlier.job_id, wait_s=30)
    assert earlier.status is JobStatus.STOPPED  # the fake worker saved checkpoint-1

    other_model = model_dir.parent / "other-model"
    other_model.mkdir()
    (other_model / "config.json").write_text("{}")
    with pytest.raises(InvalidArgument) as caught:
        await service.start(request(other_model, resume_from_job=earlier.job_id))
    assert [(v.field, v.description) for v in caught.value.violations] == [
        (
            "resume_from_job",
            f"Job {earlier.job_id} trained {model_dir} (text-generation, sft); "
            "resume it with the same model_name, task and strategy",
        )
    ]

    job = await service.start(request(model_dir, resume_from_job=earlier.job_id))
    await service.runner.wait(job.job_id, 30)
    handed = read_spec(JobPaths(data_dir).job_dir(job.job_id) / "job.json")
    assert handed.resume_checkpoint == str(JobPaths(data_dir).checkpoint_dir(earlier.job_id) / "checkpoint-1")
    assert job.status is JobStatus.COMPLETED


async def test_stop_preconditions(service: TrainerService, model_dir: Path) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await service.stop("", wait_s=1)
    assert caught.value.message == "No training job is running"
    with pytest.raises(NotFound):
        await service.stop("train_nope", wait_s=1)
    job = await service.start(request(model_dir))
    await service.runner.wait(job.job_id, 30)
    with pytest.raises(FailedPrecondition) as caught:
        await service.stop(job.job_id, wait_s=1)
    assert caught.value.message == f"Training job {job.job_id} is not running (status: completed)"
    assert service.status() is job
