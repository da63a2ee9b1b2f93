"""The runner against tests/fake_worker.py: real child processes and signals, no torch."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import InvalidArgument, Unavailable
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.jobs import EventKind, Job, JobRegistry, JobStatus
from modelforge_trainer.ports import ModelRecord
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths, JobRunner, describe_signal_exit
from modelforge_trainer.testing import FakeRegistrar

WAIT_S = 60.0


def new_job(registry: JobRegistry, scenario: str, model: str = "/models/tiny-llama") -> Job:
    request = TrainingConfig(task="text-generation", model_name=model, dataset="d.jsonl", name=scenario)
    config = resolve(request, Hyperparameters(), model_name=model, local_model=True, dataset_path="/d.jsonl")
    return registry.create(request, config)


def make_runner(tmp_path: Path, command: list[str], registrar: FakeRegistrar | None = None, grace: float = 5.0):
    sink = RecordingSink()
    runner = JobRunner(
        sink, registrar or FakeRegistrar(), JobPaths(tmp_path), stop_grace_s=grace, worker_command=command
    )
    return sink, runner


async def until_step(sink: RecordingSink, step: int) -> None:
    async with asyncio.timeout(WAIT_S):
        await sink.wait_until(lambda events: any(e.current_step >= step for e in events))


async def test_completed_job_is_registered_and_events_are_in_order(tmp_path: Path, fake_worker_command) -> None:
    registrar = FakeRegistrar()
    sink, runner = make_runner(tmp_path, fake_worker_command, registrar)
    registry = JobRegistry()
    job = new_job(registry, "complete")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)

    assert job.status is JobStatus.COMPLETED, job.error
    assert [e.seq for e in sink.events] == list(range(1, len(sink.events) + 1))
    kinds = [e.kind for e in sink.events]
    assert kinds[0] is EventKind.STATUS and sink.events[0].status is JobStatus.RUNNING
    assert kinds.count(EventKind.PROGRESS) == 3
    assert EventKind.METRIC in kinds and EventKind.LOG in kinds
    final = sink.events[-1]
    assert (final.kind, final.status, final.model_id) == (EventKind.STATUS, JobStatus.COMPLETED, "model_1")
    assert final.metrics == {"final_loss": 0.5, "eval_loss": 0.75, "perplexity": 2.117}
    assert job.last_seq == final.seq

    record = registrar.records[0]
    assert record.name == "complete"  # config.name wins over the derived name
    assert record.path == str(JobPaths(tmp_path).model_dir(job.job_id))
    assert record.training_params == {"num_epochs": 3.0, "batch_size": 2.0, "learning_rate": 2e-4}
    assert record.config["device"] == "cpu" and record.config["lora_r"] == 16
    assert (record.job_id, record.adapter_type, record.base_model) == (job.job_id, "lora", "/models/tiny-llama")
    pid_file = JobPaths(tmp_path).pid_file(job.job_id)
    assert pid_file.read_text().strip() == str(job.worker_pid)


async def test_worker_exception_becomes_the_job_error(tmp_path: Path, fake_worker_command) -> None:
    sink, runner = make_runner(tmp_path, fake_worker_command)
    job = new_job(JobRegistry(), "crash")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR
    assert job.error == "ValueError: bad things happened"
    assert sink.events[-1].error == job.error and sink.events[-1].status is JobStatus.ERROR


async def test_kill_9_marks_the_job_failed(tmp_path: Path, fake_worker_command) -> None:
    sink, runner = make_runner(tmp_path, fake_worker_command)
    registry = JobRegistry()
    job = new_job(registry, "hang")
    runner.launch(job)
    await until_step(sink, 1)
    os.kill(job.worker_pid, signal.SIGKILL)
    await runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR
    assert job.error.startswith("training process was killed by signal 9 (SIGKILL)")
    assert runner.worker_pid(job.job_id) is None
    # The next job runs normally.
    second = new_job(registry, "complete")
    runner.launch(second)
    await runner.wait(second.job_id, WAIT_S)
    assert second.status is JobStatus.COMPLETED


async def test_stop_is_graceful_and_keeps_the_checkpoint(tmp_path: Path, fake_worker_command) -> None:
    sink, runner = make_runner(tmp_path, fake_worker_command)
    job = new_job(JobRegistry(), "hang")
    runner.launch(job)
    await until_step(sink, 1)
    await runner.stop(job, WAIT_S)
    checkpoint = JobPaths(tmp_path).checkpoint_dir(job.job_id) / "checkpoint-1"
    assert job.status is JobStatus.STOPPED
    assert job.message == f"Training stopped by user at step 1/3; checkpoint saved to {checkpoint}"
    stopping, stopped = sink.events[-2:]
    assert (stopping.kind, stopping.status, stopping.message) == (
        EventKind.STATUS,
        JobStatus.RUNNING,
        "Stopping at the next step (saving a checkpoint)",
    )
    assert (stopped.kind, stopped.status) == (EventKind.STATUS, JobStatus.STOPPED)


async def test_shutdown_stops_running_jobs_with_a_checkpoint(tmp_path: Path, fake_worker_command) -> None:
    sink, runner = make_runner(tmp_path, fake_worker_command)
    job = new_job(JobRegistry(), "hang")
    runner.launch(job)
    await until_step(sink, 1)
    await runner.shutdown([job], WAIT_S)
    assert job.status is JobStatus.STOPPED
    assert job.message.startswith("Training stopped because trainer-svc shut down at step 1/3; checkpoint saved to ")


async def test_a_worker_ignoring_the_stop_is_killed_after_the_grace_period(tmp_path: Path, fake_worker_command) -> None:
    sink, runner = make_runner(tmp_path, fake_worker_command, grace=0.5)
    job = new_job(JobRegistry(), "stubborn")
    runner.launch(job)
    await until_step(sink, 1)
    await runner.stop(job, WAIT_S)
    assert job.status is JobStatus.STOPPED
    assert job.message == "Training stopped by user at step 1/3"


async def test_a_refused_registration_fails_the_job(tmp_path: Path, fake_worker_command) -> None:
    registrar = FakeRegistrar(error=InvalidArgument("Model name 'x' is invalid"))
    _, runner = make_runner(tmp_path, fake_worker_command, registrar)
    job = new_job(JobRegistry(), "complete")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR
    assert job.error == "Model registration failed: Model name 'x' is invalid"


class FlakyRegistrar(FakeRegistrar):
    """Unavailable for the first `outages` calls (the registry restarting), then registers."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages
        self.calls = 0

    async def register_model(self, record: ModelRecord) -> str:
        self.calls += 1
        if self.calls <= self.outages:
            raise Unavailable("registry-svc is unavailable")
        return await super().register_model(record)


async def test_registration_is_retried_through_an_outage_while_the_job_is_registering(
    tmp_path: Path, fake_worker_command
) -> None:
    registrar = FlakyRegistrar(outages=2)
    sink, runner = make_runner(tmp_path, fake_worker_command, registrar)
    job = new_job(JobRegistry(), "complete")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)

    assert job.status is JobStatus.COMPLETED and job.model_id == "model_1"
    assert registrar.calls == 3 and len(registrar.records) == 1
    statuses = [e.status for e in sink.events if e.kind is EventKind.STATUS]
    assert statuses == [JobStatus.RUNNING, JobStatus.REGISTERING, JobStatus.COMPLETED]
    registering = next(e for e in sink.events if e.status is JobStatus.REGISTERING)
    assert "registry-svc is unavailable" in registering.message
    assert not JobPaths(tmp_path).registration_file(job.job_id).exists()  # done with once registered


async def test_registration_gives_up_after_its_retry_window(tmp_path: Path, fake_worker_command) -> None:
    sink = RecordingSink()
    runner = JobRunner(
        sink, FlakyRegistrar(outages=100), JobPaths(tmp_path), worker_command=fake_worker_command,
        registration_retry_s=0.5,
    )
    job = new_job(JobRegistry(), "complete")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR
    assert job.error == "Model registration failed: registry-svc is unavailable (retried for 0s)"


async def test_a_registration_left_by_a_dead_replica_is_taken_over(tmp_path: Path, fake_worker_command) -> None:
    first = FlakyRegistrar(outages=100)
    sink, runner = make_runner(tmp_path, fake_worker_command, first)
    job = new_job(JobRegistry(), "complete")
    runner.launch(job)
    async with asyncio.timeout(WAIT_S):
        await sink.wait_until(lambda events: any(e.status is JobStatus.REGISTERING for e in events))
    saved = JobPaths(tmp_path).registration_file(job.job_id)
    assert saved.is_file()

    # Another replica (a new runner on the same data dir) takes the job over from its record.
    registrar = FakeRegistrar()
    _, other = make_runner(tmp_path, fake_worker_command, registrar)
    taken = Job(job_id=job.job_id, request=job.request, spec=job.spec, status=JobStatus.REGISTERING)
    assert other.resume_registration(taken)
    await other.wait(job.job_id, WAIT_S)
    assert taken.status is JobStatus.COMPLETED and taken.model_id == "model_1"
    assert registrar.records[0].job_id == job.job_id and registrar.records[0].metrics["final_loss"] == 0.5
    assert not other.resume_registration(Job(job_id="train_unknown", request=job.request, spec=job.spec))
    for retrying in list(runner._tasks.values()):  # the first replica "died" meanwhile
        retrying.cancel()


async def test_silent_exit_reports_the_last_output_line(tmp_path: Path, fake_worker_command) -> None:
    _, runner = make_runner(tmp_path, fake_worker_command)
    job = new_job(JobRegistry(), "silent-exit")
    runner.launch(job)
    await runner.wait(job.job_id, WAIT_S)
    assert job.error == "training process exited with code 3: something broke"
    assert "something broke" in JobPaths(tmp_path).log_file(job.job_id).read_text()


@pytest.mark.parametrize(
    ("signum", "oom", "peak", "total", "expected"),
    [
        (9, True, 3 * 1024**3, 8 * 1024**3, "out of memory, the kernel's OOM killer ended it (peak 3.0 GiB)"),
        (9, False, 7 * 1024**3, 8 * 1024**3, "likely out of memory (it used 7.0 GiB of 8.0 GiB RAM)"),
        (9, False, 1024**3, 8 * 1024**3, "from outside trainer-svc"),
        (11, False, 0, 0, "killed by signal 11 (SIGSEGV)"),
    ],
)
def test_signal_exits_are_explained(signum: int, oom: bool, peak: int, total: int, expected: str) -> None:
    text = describe_signal_exit(signum, oom_killed=oom, peak_rss_bytes=peak, total_ram_bytes=total)
    assert text.startswith(f"training process was killed by signal {signum}")
    assert expected in text
