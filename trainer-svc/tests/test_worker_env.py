"""A training worker's environment carries only what training needs (issue 14, secrets): no API keys,
no database URL, no other MODELFORGE_* setting, and the Hub token only for a job that uses the Hub."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.jobs import JobRegistry
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths, JobRunner, worker_environment
from modelforge_trainer.testing import FakeRegistrar
from modelforge_training.lifeline import DATA_DIR_ENV, PARENT_ENV

TRAINER_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/trainer",
    "LC_ALL": "C.UTF-8",
    "CUDA_VISIBLE_DEVICES": "0",
    "HF_HOME": "/cache/hf",
    "OMP_NUM_THREADS": "2",
    "MODELFORGE_API_KEYS": "alice:sk-alice",
    "MODELFORGE_DATABASE_URL": "postgresql+psycopg://u:pw@db/modelforge",
    "MODELFORGE_HF_TOKEN": "hf_secret",
    "MODELFORGE_REGISTRY_ADDR": "10.0.0.5:50052",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "DATABASE_URL": "postgres://x",
}
SECRETS = ("sk-alice", "pw@db", "hf_secret", "aws", "postgres://x")


def test_a_local_model_job_gets_no_secret_and_no_hub() -> None:
    env = worker_environment(TRAINER_ENV, needs_hub=False)
    assert {k: env[k] for k in ("PATH", "HOME", "LC_ALL", "CUDA_VISIBLE_DEVICES", "HF_HOME", "OMP_NUM_THREADS")} == {
        k: TRAINER_ENV[k] for k in ("PATH", "HOME", "LC_ALL", "CUDA_VISIBLE_DEVICES", "HF_HOME", "OMP_NUM_THREADS")
    }
    assert env["HF_HUB_OFFLINE"] == "1"
    assert not [k for k in env if k.startswith("MODELFORGE_")]
    assert not [value for value in env.values() if any(secret in value for secret in SECRETS)]
    assert "HF_TOKEN" not in env and "DATABASE_URL" not in env


def test_a_hub_job_gets_the_hub_token_and_nothing_else_secret() -> None:
    env = worker_environment(TRAINER_ENV, needs_hub=True)
    assert env["HF_TOKEN"] == "hf_secret"
    assert "HF_HUB_OFFLINE" not in env
    assert not [value for key, value in env.items() if key != "HF_TOKEN" and any(s in value for s in SECRETS)]
    # A token the operator gave under huggingface_hub's own name is passed on the same way.
    assert worker_environment({"HUGGING_FACE_HUB_TOKEN": "hf_other"}, needs_hub=True)["HF_TOKEN"] == "hf_other"
    assert "HUGGING_FACE_HUB_TOKEN" not in worker_environment({"HUGGING_FACE_HUB_TOKEN": "x"}, needs_hub=False)


async def test_the_worker_process_runs_with_that_environment(tmp_path: Path, fake_worker_command) -> None:
    sink = RecordingSink()
    runner = JobRunner(
        sink, FakeRegistrar(), JobPaths(tmp_path), stop_grace_s=5, worker_command=fake_worker_command,
        env={**TRAINER_ENV, "PATH": "/usr/bin:/bin"},
    )
    request = TrainingConfig(task="text-generation", model_name="/models/m", dataset="d.jsonl", name="hang")
    config = resolve(request, Hyperparameters(), model_name="/models/m", local_model=True, dataset_path="/d.jsonl")
    job = JobRegistry().create(request, config)
    runner.launch(job)
    async with asyncio.timeout(60):
        await sink.wait_until(lambda events: any(e.current_step >= 1 for e in events))
    environ = psutil.Process(job.worker_pid).environ()
    await runner.stop(job, 30)

    assert not [value for value in environ.values() if any(secret in value for secret in SECRETS)]
    assert environ[DATA_DIR_ENV] == str(tmp_path) and environ[PARENT_ENV].split(":")[0] == str(os.getpid())
    assert sorted(k for k in environ if k.startswith("MODELFORGE_")) == sorted(
        ["MODELFORGE_WORKER_DATA_DIR", "MODELFORGE_WORKER_PARENT", "MODELFORGE_WORKER_STOP_GRACE_S"]
    )
