"""TrainerService as a client sees it: the real gRPC server, a private nats-server, the fake worker
(real child processes speaking the worker protocol, no torch)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from modelforge.v1 import common_pb2, events_pb2, trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_common.testing import NatsServer, free_port, nats_server, training_events_until
from modelforge_trainer.app import TrainerApp, build_app
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.runner import JobPaths
from modelforge_trainer.settings import TrainerSettings
from modelforge_trainer.testing import FakeDatasets, FakeRegistrar

pytestmark = pytest.mark.integration

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False)
TERMINAL = {common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_ERROR, common_pb2.JOB_STATUS_STOPPED}
WAIT_S = 60.0


@dataclass
class Trainer:
    app: TrainerApp
    stub: trainer_pb2_grpc.TrainerServiceStub
    registrar: FakeRegistrar
    nats_url: str
    data_dir: Path


async def running_trainer(
    tmp_path: Path, nats_url: str, chat_dataset: Path, worker: list[str]
) -> AsyncIterator[Trainer]:
    settings = TrainerSettings(
        data_dir=tmp_path / "data", nats_url=nats_url, memory_check=False, stop_grace_s=5, log_json=False
    )
    registrar = FakeRegistrar()
    app = build_app(
        settings,
        bind="127.0.0.1:0",
        device=CPU,
        datasets=FakeDatasets({"chat.jsonl": chat_dataset}),
        registrar=registrar,
        worker_command=worker,
    )
    await app.start()
    try:
        async with make_channel(f"127.0.0.1:{app.port}") as channel:
            yield Trainer(app, trainer_pb2_grpc.TrainerServiceStub(channel), registrar, nats_url, tmp_path / "data")
    finally:
        await app.stop()


@pytest.fixture
async def trainer(tmp_path: Path, chat_dataset: Path, fake_worker_command: list[str]) -> AsyncIterator[Trainer]:
    with nats_server() as nats:
        async for running in running_trainer(tmp_path, nats.url, chat_dataset, fake_worker_command):
            yield running


def config(model_dir: Path, scenario: str, **fields: object) -> common_pb2.TrainingConfig:
    return common_pb2.TrainingConfig(
        task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", name=scenario, **fields
    )


async def start(trainer: Trainer, model_dir: Path, scenario: str) -> common_pb2.TrainingJob:
    reply = await trainer.stub.StartTraining(
        trainer_pb2.StartTrainingRequest(config=config(model_dir, scenario)), timeout=10
    )
    return reply.job


async def job_events(nats_url: str, job_id: str, until=None) -> list[events_pb2.TrainingEvent]:
    """Replays the job's events from the stream until `until(event)` (default: a terminal status)."""
    until = until or (lambda e: e.kind == events_pb2.EVENT_KIND_STATUS and e.status in TERMINAL)
    return await training_events_until(nats_url, job_id, until, WAIT_S)


async def expect_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_job_runs_publishes_its_events_and_registers_the_model(trainer: Trainer, model_dir: Path) -> None:
    job = await start(trainer, model_dir, "complete")
    assert job.status == common_pb2.JOB_STATUS_RUNNING
    assert job.job_id.startswith("train_")
    assert job.config.learning_rate == pytest.approx(2e-4)  # the resolved configuration, defaults filled in

    events = await job_events(trainer.nats_url, job.job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == events_pb2.EVENT_KIND_STATUS and events[0].status == common_pb2.JOB_STATUS_RUNNING
    progress = [e for e in events if e.kind == events_pb2.EVENT_KIND_PROGRESS]
    assert [p.current_step for p in progress] == [1, 2, 3]
    assert all(p.HasField("loss") and p.total_steps == 3 for p in progress)
    final = events[-1]
    assert final.status == common_pb2.JOB_STATUS_COMPLETED and final.model_id == "model_1"
    assert dict(final.metrics) == {"final_loss": 0.5, "eval_loss": 0.75, "perplexity": pytest.approx(2.117)}

    status = await trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(), timeout=5)
    assert status.has_job and status.job.job_id == job.job_id
    assert status.job.status == common_pb2.JOB_STATUS_COMPLETED
    assert (status.job.progress, status.job.last_seq, status.job.model_id) == (100.0, final.seq, "model_1")
    listed = await trainer.stub.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest(), timeout=5)
    assert [j.job_id for j in listed.jobs] == [job.job_id]
    assert trainer.registrar.records[0].job_id == job.job_id


async def test_invalid_requests_are_refused_with_field_violations(trainer: Trainer, model_dir: Path) -> None:
    bad = config(model_dir, "complete", learning_rate=-1.0)
    bad.task = "xyz"
    error = await expect_error(trainer.stub.StartTraining(trainer_pb2.StartTrainingRequest(config=bad), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in violations_of(error)} == {"task", "learning_rate"}
    assert error.details().startswith("Invalid task: xyz. Must be one of")
    unknown = config(model_dir, "complete")
    unknown.dataset = "missing.jsonl"
    error = await expect_error(trainer.stub.StartTraining(trainer_pb2.StartTrainingRequest(config=unknown), timeout=5))
    assert error.details() == "Dataset validation failed: File not found: missing.jsonl"
    status = await trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(), timeout=5)
    assert not status.has_job  # nothing was queued


async def test_conflict_stop_and_reset(trainer: Trainer, model_dir: Path) -> None:
    job = await start(trainer, model_dir, "hang")
    error = await expect_error(start(trainer, model_dir, "complete"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"A training job is already running: {job.job_id}"
    error = await expect_error(trainer.stub.ResetTrainingStatus(trainer_pb2.ResetTrainingStatusRequest(), timeout=5))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    await job_events(trainer.nats_url, job.job_id, until=lambda e: e.current_step == 1)
    stopped = await trainer.stub.StopTraining(trainer_pb2.StopTrainingRequest(), timeout=30)
    assert stopped.job.status == common_pb2.JOB_STATUS_STOPPED
    assert stopped.job.message.startswith("Training stopped by user at step 1/3; checkpoint saved to ")
    error = await expect_error(trainer.stub.StopTraining(trainer_pb2.StopTrainingRequest(), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "No training job is running")

    await trainer.stub.ResetTrainingStatus(trainer_pb2.ResetTrainingStatusRequest(), timeout=5)
    status = await trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(), timeout=5)
    assert not status.has_job
    by_id = await trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(job_id=job.job_id), timeout=5)
    assert by_id.job.status == common_pb2.JOB_STATUS_STOPPED
    error = await expect_error(
        trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(job_id="train_nope"), timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_kill_9_of_the_worker_fails_the_job_and_the_service_goes_on(trainer: Trainer, model_dir: Path) -> None:
    job = await start(trainer, model_dir, "hang")
    await job_events(trainer.nats_url, job.job_id, until=lambda e: e.current_step == 1)
    pid = int(JobPaths(trainer.data_dir).pid_file(job.job_id).read_text())
    os.kill(pid, signal.SIGKILL)
    events = await job_events(trainer.nats_url, job.job_id)
    assert events[-1].status == common_pb2.JOB_STATUS_ERROR
    assert events[-1].error.startswith("training process was killed by signal 9 (SIGKILL)")

    second = await start(trainer, model_dir, "complete")
    assert (await job_events(trainer.nats_url, second.job_id))[-1].status == common_pb2.JOB_STATUS_COMPLETED


async def test_training_goes_on_while_nats_is_down(
    tmp_path: Path, chat_dataset: Path, model_dir: Path, fake_worker_command: list[str]
) -> None:
    nats = NatsServer(port=free_port(), store_dir=tmp_path / "nats")
    try:
        async for trainer in running_trainer(tmp_path, nats.url, chat_dataset, fake_worker_command):
            job = await start(trainer, model_dir, "complete")
            await trainer.app.service.runner.wait(job.job_id, WAIT_S)
            status = await trainer.stub.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(), timeout=5)
            assert status.job.status == common_pb2.JOB_STATUS_COMPLETED
            nats.start()  # the buffered events go out once NATS is back
            events = await job_events(nats.url, job.job_id)
            assert [e.seq for e in events] == list(range(1, status.job.last_seq + 1))
    finally:
        nats.kill()
