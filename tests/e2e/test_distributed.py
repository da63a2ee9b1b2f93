"""Issue 19 through the real processes: jobs of two processes on the CPU (torchrun, gloo), DDP and
FSDP2, started through the gateway; stop and resume of a two-process job; a rank killed mid-training.

The loss comparison: a 1-process job with gradient accumulation 2 and a 2-process job with
accumulation 1 see the same 4 examples per optimizer step (the distributed sampler deals the same
shuffled order out to the ranks), from the same LoRA initialisation (same seed) and without dropout,
so their final training loss agrees to float rounding and the order of the gradient sums. Tolerance:
1% of the 1-process loss (measured: under 0.01%).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from stack_api import TERMINAL, start_training, training_request, upload_jsonl

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOSS_TOLERANCE = 0.01  # relative to the 1-process run's final loss
STEPS = 6


@pytest.fixture(scope="module")
def dataset(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_jsonl(
        client, text_generation_rows(24, seed=3), tmp_path_factory.mktemp("data") / "distributed.jsonl"
    )


def body(model: Path, dataset: str, **overrides: Any) -> dict[str, Any]:
    return training_request(
        model, dataset, max_seq_length=64, lora_dropout=0.0, seed=7, save_steps=1000, max_steps=STEPS
    ) | overrides


def wait_status(client: httpx.Client, done: Any, limit_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get("/api/training_status").json()
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"training status never got there: {status}")


def train(client: httpx.Client, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    job_id = start_training(client, request)
    final = wait_status(client, lambda s: s.get("job_id") == job_id and s["status"] in TERMINAL)
    return job_id, final


def models_of(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    listed = client.get("/api/models", params={"limit": 1000}).json()["models"]
    details = [client.get(f"/api/models/{m['model_id']}").json() for m in listed]
    return [model for model in details if model["job_id"] == job_id]


def job_processes(job_id: str) -> list[psutil.Process]:
    """Live processes of a job: its launcher and ranks name the job's job.json on their command line."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(job_id in part for part in cmdline):
            found.append(process)
    return found


def test_two_process_ddp_and_fsdp_match_one_process(
    client: httpx.Client, dataset: str, tiny_causal_model: Path
) -> None:
    single_job, single = train(client, body(tiny_causal_model, dataset, gradient_accumulation_steps=2))
    assert single["status"] == "completed", single
    [single_model] = models_of(client, single_job)
    reference = single_model["metrics"]["final_loss"]

    for mode in ("fsdp", "ddp"):
        job_id, final = train(client, body(tiny_causal_model, dataset, processes_per_node=2, distributed=mode))
        assert final["status"] == "completed", (mode, final.get("message"), final.get("error"))
        models = models_of(client, job_id)
        assert len(models) == 1, (mode, models)  # rank 0 alone registers
        loss = models[0]["metrics"]["final_loss"]
        assert abs(loss - reference) <= LOSS_TOLERANCE * reference, (mode, loss, reference)
        assert models[0]["config"]["distributed"] == mode and models[0]["config"]["world_size"] == 2
        lineage = client.get(f"/api/models/{models[0]['model_id']}/lineage").json()
        environment = lineage["lineage"]["environment"] if "lineage" in lineage else lineage["environment"]
        assert (environment["world_size"], environment["distributed"]) == (2, mode), environment
        assert not job_processes(job_id)


def test_two_process_job_stops_with_a_checkpoint_and_resumes(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    first_job = start_training(client, body(tiny_causal_model, dataset, processes_per_node=2, max_steps=100_000))
    wait_status(client, lambda s: s.get("job_id") == first_job and (s.get("current_step") or 0) >= 3)
    assert client.post("/api/stop_training").status_code == 200
    stopped = wait_status(client, lambda s: s.get("job_id") == first_job and s["status"] in TERMINAL)
    assert stopped["status"] == "stopped", stopped
    stop_step = stopped["current_step"]
    checkpoints = Path(stack.env["MODELFORGE_DATA_DIR"]).rglob(f"*{first_job}*/**/checkpoint-{stop_step}")
    assert any(p.is_dir() for p in checkpoints), f"no checkpoint-{stop_step} saved for {first_job}"
    assert not job_processes(first_job)

    steps_seen: list[int] = []
    resumed_job = start_training(client, body(
        tiny_causal_model, dataset, processes_per_node=2, max_steps=stop_step + 3, resume_from_job=first_job))

    def finished(status: dict[str, Any]) -> bool:
        if status.get("job_id") == resumed_job and status.get("current_step"):
            steps_seen.append(status["current_step"])
        return status.get("job_id") == resumed_job and status["status"] in TERMINAL

    done = wait_status(client, finished)
    assert done["status"] == "completed", done
    assert done["current_step"] == stop_step + 3
    assert steps_seen and min(steps_seen) >= stop_step, steps_seen  # from the checkpoint, not from 0
    assert len(models_of(client, resumed_job)) == 1


def test_a_killed_rank_fails_the_job_and_leaves_no_process(
    client: httpx.Client, dataset: str, tiny_causal_model: Path
) -> None:
    job_id = start_training(client, body(tiny_causal_model, dataset, processes_per_node=2, max_steps=100_000))
    wait_status(client, lambda s: s.get("job_id") == job_id and (s.get("current_step") or 0) >= 2)
    ranks = [p for p in job_processes(job_id) if "--events-path" in p.cmdline()]
    assert len(ranks) == 2, [p.cmdline() for p in ranks]
    ranks[-1].kill()

    final = wait_status(client, lambda s: s.get("job_id") == job_id and s["status"] in TERMINAL)
    assert final["status"] == "error", final
    text = f"{final.get('message', '')} {final.get('error') or ''}"
    assert "rank" in text and "SIGKILL" in text, final
    deadline = time.monotonic() + 15
    while job_processes(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not job_processes(job_id), [p.cmdline() for p in job_processes(job_id)]
    assert not models_of(client, job_id)


def test_distributed_requests_refused_with_the_reason(
    client: httpx.Client, dataset: str, tiny_causal_model: Path
) -> None:
    cases = [
        ({"num_nodes": 2}, "num_nodes", "kubeflow"),
        ({"processes_per_node": 2, "strategy": "dpo"}, "processes_per_node", "one process"),
        ({"processes_per_node": 2, "distributed": "fsdp", "strategy": "qlora"}, "distributed", "4-bit"),
        ({"processes_per_node": 0}, "processes_per_node", ""),
        ({"distributed": "zero3"}, "distributed", ""),
    ]
    for overrides, field, words in cases:
        refused = client.post("/api/start_training", json=body(tiny_causal_model, dataset, **overrides))
        assert refused.status_code in (400, 422), (overrides, refused.text)
        assert field in refused.text and words in refused.text, (overrides, refused.text)
