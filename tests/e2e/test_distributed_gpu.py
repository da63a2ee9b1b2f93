"""Issue 19 on a GPU (owed where CI has none: skipped without CUDA): a job through the torchrun path
with one process on the GPU, so the process group is nccl's, through the gateway like any job.
Run it on a GPU machine: .venv/bin/pytest -q tests/e2e/test_distributed_gpu.py"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import start_training, upload_jsonl, wait_training_end

from modelforge_devkit.sample_data import text_generation_rows

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (nccl)"),
]


def test_one_process_job_through_torchrun_on_the_gpu(
    client: httpx.Client, tiny_causal_model: Path, tmp_path: Path
) -> None:
    dataset = upload_jsonl(client, text_generation_rows(24, seed=5), tmp_path / "gpu.jsonl")
    body: dict[str, Any] = {
        "task": "text-generation", "model_name": str(tiny_causal_model), "dataset": dataset,
        "per_device_train_batch_size": 2, "max_seq_length": 64, "max_steps": 4, "logging_steps": 1,
        "processes_per_node": 1, "distributed": "ddp",
    }
    job_id = start_training(client, body)
    status = wait_training_end(client, job_id, wait_s=600, poll_s=0.5)
    assert status["status"] == "completed", status
    listed = client.get("/api/models", params={"limit": 1000}).json()["models"]
    models = [client.get(f"/api/models/{m['model_id']}").json() for m in listed]
    (model,) = [m for m in models if m["job_id"] == job_id]
    assert model["config"]["distributed_backend"] == "nccl" and model["config"]["world_size"] == 1
    assert model["config"]["device"].startswith("cuda")
