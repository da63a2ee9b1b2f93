"""Issue 19 on a GPU (owed where CI has none: skipped without CUDA): a job through the torchrun path
with one process on the GPU, so the process group is nccl's, through the gateway like any job.
Run it on a GPU machine: .venv/bin/pytest -q tests/e2e/test_distributed_gpu.py"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (nccl)"),
]


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
        yield http


def test_one_process_job_through_torchrun_on_the_gpu(
    client: httpx.Client, tiny_causal_model: Path, tmp_path: Path
) -> None:
    path = write_jsonl(text_generation_rows(24, seed=5), tmp_path / "gpu.jsonl")
    with path.open("rb") as handle:
        uploaded = client.post("/api/upload_dataset", files={"file": (path.name, handle, "application/jsonl")})
    assert uploaded.status_code == 200, uploaded.text
    body: dict[str, Any] = {
        "task": "text-generation", "model_name": str(tiny_causal_model), "dataset": uploaded.json()["filename"],
        "per_device_train_batch_size": 2, "max_seq_length": 64, "max_steps": 4, "logging_steps": 1,
        "processes_per_node": 1, "distributed": "ddp",
    }
    started = client.post("/api/start_training", json=body)
    assert started.status_code == 200, started.text
    job_id = started.json()["job_id"]
    deadline = time.monotonic() + 600
    while True:
        status = client.get("/api/training_status", params={"job_id": job_id}).json()
        if status["status"] in ("completed", "error", "stopped"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["status"] == "completed", status
    listed = client.get("/api/models", params={"limit": 1000}).json()["models"]
    models = [client.get(f"/api/models/{m['model_id']}").json() for m in listed]
    (model,) = [m for m in models if m["job_id"] == job_id]
    assert model["config"]["distributed_backend"] == "nccl" and model["config"]["world_size"] == 1
    assert model["config"]["device"].startswith("cuda")
