from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import FailedPrecondition, NotFound
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.jobs import EventKind, JobRegistry, JobStatus, new_job_id
from modelforge_training.protocol import Progress


def config():
    request = TrainingConfig(task="text-generation", model_name="org/model", dataset="d.jsonl")
    return request, resolve(request, Hyperparameters(), model_name="org/model", local_model=False, dataset_path="/d")


def progress(step: int, loss: float | None = 1.5) -> Progress:
    return Progress(
        step=step,
        total_steps=10,
        epoch=step / 5,
        current_epoch=1 + (step - 1) // 5,
        total_epochs=2,
        progress=step * 10.0,
        loss=loss,
        learning_rate=1e-4,
    )


def test_job_ids_carry_the_start_time() -> None:
    job_id = new_job_id(datetime(2024, 3, 15, 14, 30, 22, tzinfo=UTC))
    assert job_id.startswith("train_20240315_143022_")
    assert len(job_id.rsplit("_", 1)[1]) == 4


def test_events_are_numbered_without_gaps_across_kinds() -> None:
    registry = JobRegistry()
    job = registry.create(*config())
    events = [
        job.mark_running(),
        job.log("Loading model"),
        job.update_progress(progress(1)),
        job.update_progress(progress(2, loss=None)),
        job.record_metrics({"eval_loss": 1.2}),
        job.complete("model_1", {"final_loss": 1.1}),
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.kind for e in events] == [
        EventKind.STATUS,
        EventKind.LOG,
        EventKind.PROGRESS,
        EventKind.PROGRESS,
        EventKind.METRIC,
        EventKind.STATUS,
    ]
    assert job.last_seq == 6
    assert events[1].message == "Loading model"
    assert job.message == "Training completed successfully"  # a log line does not replace the state line
    assert events[3].loss == 1.5  # the last known loss is kept on steps without one
    assert events[2].message == "Training epoch 1/2 - Step 1/10"
    assert events[-1].status is JobStatus.COMPLETED
    assert events[-1].metrics == {"eval_loss": 1.2, "final_loss": 1.1}
    assert events[-1].model_id == "model_1"
    assert job.progress == 100.0


def test_a_second_job_is_refused_while_one_runs() -> None:
    registry = JobRegistry(max_concurrent_jobs=1)
    first = registry.create(*config())
    first.mark_running()
    with pytest.raises(FailedPrecondition) as caught:
        registry.create(*config())
    assert caught.value.message == f"A training job is already running: {first.job_id}"
    first.fail("boom")
    second = registry.create(*config())
    assert registry.current() is second


def test_terminal_jobs_do_not_change() -> None:
    registry = JobRegistry()
    job = registry.create(*config())
    job.mark_running()
    job.mark_stopped("Training stopped by user at step 3/10")
    assert job.status is JobStatus.STOPPED
    for change in (lambda: job.fail("late"), lambda: job.update_progress(progress(4)), lambda: job.complete("m", {})):
        with pytest.raises(FailedPrecondition):
            change()
    assert job.last_seq == 2


def test_error_keeps_progress_and_sets_the_error() -> None:
    job = JobRegistry().create(*config())
    job.mark_running()
    job.update_progress(progress(3))
    event = job.fail("training process was killed by signal 9 (SIGKILL)")
    assert (event.status, event.error, event.message, event.progress) == (
        JobStatus.ERROR,
        "training process was killed by signal 9 (SIGKILL)",
        "Training failed",
        30.0,
    )


def test_current_reset_and_listing() -> None:
    registry = JobRegistry()
    assert registry.current() is None
    job = registry.create(*config())
    job.mark_running()
    with pytest.raises(FailedPrecondition):
        registry.reset()
    job.complete("m", {})
    assert registry.current() is job
    registry.reset()
    assert registry.current() is None
    assert registry.get(job.job_id) is job  # still known by id and in the list
    assert registry.jobs() == [job]
    with pytest.raises(NotFound):
        registry.get("train_nope")
