"""Issue 4's checkpoints through the real processes: stop_training saves a checkpoint and ends the
job as "stopped"; a job started with resume_from_job continues from that step, not from 0, and the
registered model records what it resumed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import upload_jsonl

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def wait_status(client: httpx.Client, done: Any, limit_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get("/api/training_status").json()
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"training status never got there: {status}")


def body(model: Path, dataset: str, **overrides: Any) -> dict[str, Any]:
    return {"task": "text-generation", "model_name": str(model), "strategy": "sft", "dataset": dataset,
            "per_device_train_batch_size": 2, "max_seq_length": 64, "learning_rate": 1e-3, "logging_steps": 1,
            "save_steps": 1000} | overrides


def test_stop_saves_a_checkpoint_that_resume_continues_from(
    client: httpx.Client, stack: Stack, tiny_causal_model: Path, tmp_path: Path
) -> None:
    dataset = upload_jsonl(client, text_generation_rows(24), tmp_path / "resume.jsonl")

    # Long enough that it is still running when the stop arrives.
    first = client.post("/api/start_training", json=body(tiny_causal_model, dataset, max_steps=100_000))
    assert first.status_code == 200, first.text
    first_job = first.json()["job_id"]
    wait_status(client, lambda s: (s.get("current_step") or 0) >= 3)
    stopped = client.post("/api/stop_training")
    assert stopped.status_code == 200, stopped.text
    final = wait_status(client, lambda s: s["status"] in ("stopped", "completed", "error", "idle"))
    assert final["status"] == "stopped", final
    stop_step = final["current_step"]
    assert stop_step >= 3
    checkpoints = Path(stack.env["MODELFORGE_DATA_DIR"]).rglob(f"*{first_job}*/**/checkpoint-{stop_step}")
    assert any(p.is_dir() for p in checkpoints), f"no checkpoint-{stop_step} saved for {first_job}"

    resumed = client.post("/api/start_training", json=body(
        tiny_causal_model, dataset, max_steps=stop_step + 3, resume_from_job=first_job))
    assert resumed.status_code == 200, resumed.text
    steps_seen: list[int] = []

    def finished(status: dict[str, Any]) -> bool:
        if status.get("current_step"):
            steps_seen.append(status["current_step"])
        return status["status"] in ("completed", "error", "stopped")

    done = wait_status(client, finished)
    assert done["status"] == "completed", done
    assert done["current_step"] == stop_step + 3
    # Trainer state: the resumed job starts at the checkpoint's step; from 0 it would report 1, 2, ...
    assert steps_seen and min(steps_seen) >= stop_step, steps_seen

    models = client.get("/api/models").json()["models"]
    model = client.get(f"/api/models/{models[0]['model_id']}").json()
    assert model["job_id"] == resumed.json()["job_id"]
    assert model["config"].get("resume_from_job") == first_job, model["config"]
