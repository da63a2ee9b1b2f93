"""Issue 10 through the real processes: a tiny training records its full lineage, the lineage's
reproduce body trains an equal model under a new id, a changed dataset digest is refused, listing
filters and pages, and the playground refuses altered or missing adapter files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import model_of_job, start_training, wait_training_end

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROWS = 20
EVAL_SPLIT = 0.2
SEED = 11
MAX_STEPS = 4
HYPERPARAMETERS = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "max_seq_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "warmup_ratio",
    "lr_scheduler_type",
    "optim",
    "max_steps",
    "save_steps",
    "logging_steps",
    "eval_split",
    "seed",
    "bf16",
    "use_4bit",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Starts a job, waits for it to end, returns the details of the model it registered."""
    job_id = start_training(client, body)
    status = wait_training_end(client, job_id)
    assert status["status"] == "completed", status
    return model_of_job(client, job_id, body["model_name"])


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
        yield http


def test_lineage_reproduce_listing_and_trusted_artifacts(
    client: httpx.Client, tiny_causal_model: Path, tmp_path: Path
) -> None:
    data = write_jsonl(text_generation_rows(ROWS, seed=5), tmp_path / "lineage.jsonl")
    with data.open("rb") as handle:
        uploaded = client.post("/api/upload_dataset", files={"file": (data.name, handle, "application/jsonl")})
    assert uploaded.status_code == 200, uploaded.text
    dataset = uploaded.json()["filename"]
    base = str(tiny_causal_model.resolve())
    body = {
        "task": "text-generation",
        "model_name": base,
        "provider": "huggingface",
        "strategy": "sft",
        "dataset": dataset,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 2,
        "max_seq_length": 64,
        "learning_rate": 1e-3,
        "max_steps": MAX_STEPS,
        "logging_steps": 1,
        "eval_split": EVAL_SPLIT,
        "seed": SEED,
        "name": "lineage-first",
    }

    first = train(client, body)
    lineage = first["lineage"]
    assert lineage["base_model"] == {
        "name": base,
        "local": True,
        "config_sha256": sha256(tiny_causal_model / "config.json"),
        "revision": None,
    }
    n_eval = round(ROWS * EVAL_SPLIT)
    assert lineage["dataset"] == {
        "filename": dataset,
        "path": lineage["dataset"]["path"],
        "sha256": sha256(data),
        "num_rows": ROWS,
        "train_rows": ROWS - n_eval,
        "eval_rows": n_eval,
        "eval_split": EVAL_SPLIT,
        "seed": SEED,
    }
    assert Path(lineage["dataset"]["path"]).name == dataset
    config = lineage["config"]
    assert set(config) >= set(HYPERPARAMETERS)  # defaults included
    for name in ("num_train_epochs", "per_device_train_batch_size", "max_seq_length", "max_steps", "seed", "name"):
        assert config[name] == body[name], name
    assert config["learning_rate"] == pytest.approx(1e-3)
    assert (config["lora_r"], config["lr_scheduler_type"]) == (16, "cosine")  # trainer defaults
    assert (lineage["task"], lineage["strategy"], lineage["provider"]) == ("text-generation", "sft", "huggingface")
    assert lineage["environment"] == {
        "versions": {p: importlib.metadata.version(p) for p in ("torch", "transformers", "peft", "trl", "datasets")},
        "device": "cpu",
        "python": platform.python_version(),
        "world_size": 1, "distributed": "", "processes_per_node": 1, "num_nodes": 1,  # one process
    }
    job = lineage["job"]
    assert (job["job_id"], job["status"], job["owner"]) == (first["job_id"], "completed", "")
    queued, started, finished = (moment(job[k]) for k in ("queued_at", "started_at", "finished_at"))
    assert queued <= started <= finished
    assert job["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert lineage["metrics"] == first["metrics"] and "final_loss" in lineage["metrics"]
    assert [p["step"] for p in lineage["loss_curve"]] == list(range(1, MAX_STEPS + 1))
    # Warmup and cosine decay put a learning rate of 0 at the ends; every point still carries one.
    assert all(p["loss"] > 0 and p["learning_rate"] >= 0 for p in lineage["loss_curve"])
    assert any(p["learning_rate"] > 0 for p in lineage["loss_curve"])
    assert lineage["parent_model_id"] is None

    alone = client.get(f"/api/models/{first['id']}/lineage").json()
    assert {k: v for k, v in alone.items() if k not in ("model_id", "reproduce")} == lineage
    reproduce = alone["reproduce"]
    assert (reproduce["dataset"], reproduce["dataset_sha256"], reproduce["model_name"]) == (dataset, sha256(data), base)

    stale = client.post("/api/start_training", json={**reproduce, "dataset_sha256": "0" * 64})
    assert stale.status_code == 409, stale.text
    assert stale.json()["detail"].startswith(f"Dataset {dataset} does not match dataset_sha256")

    second = train(client, reproduce)
    assert second["model_id"] != first["model_id"] and second["id"] != first["id"]
    again = second["lineage"]
    # Equal but for the ids, times and the (unique) name.
    for part in ("base_model", "dataset", "task", "strategy", "provider", "environment", "parent_model_id"):
        assert again[part] == lineage[part], part
    assert {k: v for k, v in again["config"].items() if k != "name"} == {k: v for k, v in config.items() if k != "name"}
    assert again["job"]["job_id"] == second["job_id"] != job["job_id"]
    assert [p["step"] for p in again["loss_curve"]] == [p["step"] for p in lineage["loss_curve"]]
    # Same seed, same data, same CPU: the same losses.
    assert [p["loss"] for p in again["loss_curve"]] == pytest.approx(
        [p["loss"] for p in lineage["loss_curve"]], rel=1e-3
    )

    # Listing: filters, paging and the total, newest first.
    page = client.get("/api/models", params={"base_model": base, "status": "completed", "limit": 1}).json()
    assert (page["total"], [m["model_id"] for m in page["models"]]) == (2, [second["model_id"]])
    rest = client.get("/api/models", params={"base_model": base, "limit": 1, "offset": 1}).json()
    assert [m["model_id"] for m in rest["models"]] == [first["model_id"]]
    assert client.get("/api/models", params={"base_model": base, "strategy": "dpo"}).json() == {
        "models": [],
        "total": 0,
    }

    # Artifacts: an altered adapter file and a missing one are refused with 409, never a 500.
    adapter = "adapter_model.safetensors"
    with (Path(second["path"]) / adapter).open("r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    generate = {"prompt": "Hello", "max_new_tokens": 2, "temperature": 0}
    altered = client.post("/api/playground/generate", json={**generate, "model_id": second["id"]})
    assert altered.status_code == 409, altered.text
    assert altered.json()["detail"] == f"model artifact {adapter} is altered (sha256 mismatch)"
    (Path(first["path"]) / adapter).unlink()
    missing = client.post("/api/playground/generate", json={**generate, "model_id": first["id"]})
    assert missing.status_code == 409, missing.text
    assert missing.json()["detail"] == f"model artifact {adapter} is missing"
