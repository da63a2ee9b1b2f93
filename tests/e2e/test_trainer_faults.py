"""Issue 14, trainer side, through real processes: a job started with the seed POST /api/start_training
survives a kill -9 of trainer-svc (redelivered, completed; no worker of the killed trainer alive 10 s
later), a registry outage near the end of training only delays the model's registration (the job is
`registering` meanwhile, its folder is kept, no internal address shows), and the trainer's /metrics
counts the jobs and the step times."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from stack_api import TERMINAL, WAIT_S, running_stack, start_training, training_request, upload_jsonl, wait_job

from modelforge_common.metrics import metrics_port_for
from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# host:port, a gRPC target or a URL with an address: what no job message may show.
INTERNAL_ADDRESS = re.compile(r"\d{1,3}(\.\d{1,3}){3}:\d+|localhost:\d+|ipv4:|ipv6:|dns:")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]) -> Iterator[Stack]:
    env = stack_env_for(tmp_path_factory.mktemp("faults"))
    env.update(
        {
            "MODELFORGE_JOB_ACK_WAIT_S": "6",  # a dead replica's job is redelivered after this
            "MODELFORGE_JOB_RECORD_INTERVAL_S": "0.5",
            "MODELFORGE_MEMORY_CHECK": "false",
        }
    )
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_jsonl(client, text_generation_rows(16, seed=7), tmp_path_factory.mktemp("data") / "chat.jsonl")


def worker_of(stack: Stack, job_id: str) -> psutil.Process:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for child in psutil.Process(stack.running()["trainer"]).children(recursive=True):
            try:
                if any(job_id in part for part in child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker runs {job_id}")


def gone_within(process: psutil.Process, seconds: float) -> bool:
    """Polls until the process has exited (or is a zombie nobody reaped yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def model_names(client: httpx.Client) -> list[str]:
    response = client.get("/api/models")
    assert response.status_code == 200, response.text
    listed = response.json()
    return [m["name"] for m in (listed["models"] if isinstance(listed, dict) else listed)]


def test_kill_9_of_the_trainer_during_a_seed_start_job_redelivers_it_and_leaves_no_worker(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    job_id = start_training(
        client, training_request(tiny_causal_model, dataset, max_steps=20, save_steps=2, name="seed-killed")
    )
    # The seed start keeps its 409 while that job is in progress (queued or running, anywhere).
    conflict = client.post("/api/start_training", json=training_request(tiny_causal_model, dataset, name="second"))
    assert conflict.status_code == 409, conflict.text
    worker = worker_of(stack, job_id)
    checkpoints = Path(stack.env["MODELFORGE_DATA_DIR"]) / "checkpoints" / job_id

    def saved() -> bool:
        return any((c / "trainer_state.json").is_file() for c in checkpoints.glob("checkpoint-*"))

    wait_job(client, job_id, lambda j: j["status"] == "running" and saved())
    os.kill(stack.running()["trainer"], signal.SIGKILL)
    assert gone_within(worker, 10), f"worker {worker.pid} outlived the killed trainer"

    stack.stop_one("trainer")  # its pid file; nothing of it is alive
    stack.start_service("trainer")
    finished = wait_job(client, job_id, lambda j: j["status"] in TERMINAL)

    assert finished["status"] == "completed", finished
    assert finished["attempts"] == 2
    assert model_names(client).count("seed-killed") == 1
    status = client.get("/api/training_status").json()
    assert (status["job_id"], status["status"]) == (job_id, "completed")


def test_a_registry_outage_near_the_end_of_training_delays_the_registration_only(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    job_id = start_training(client, training_request(tiny_causal_model, dataset, max_steps=16, name="through-outage"))
    wait_job(client, job_id, lambda j: j["status"] == "running" and j["current_step"] >= 8)
    stack.stop_one("registry", sig=signal.SIGKILL)

    # Training ends; the registry is away: the job waits in `registering`, its adapter kept.
    registering = wait_job(client, job_id, lambda j: j["status"] in ("registering", *TERMINAL))
    assert registering["status"] == "registering", registering
    model_dir = Path(stack.env["MODELFORGE_DATA_DIR"]) / "models" / job_id
    assert (model_dir / "adapter_config.json").is_file()
    v1 = client.get("/api/training_status", params={"job_id": job_id}).json()
    assert v1["status"] == "registering", v1
    for text in (registering["message"], registering.get("error") or "", v1["message"]):
        assert not INTERNAL_ADDRESS.search(text), text

    stack.start_service("registry")  # its start-up sweep must leave the folder of a job in progress
    finished = wait_job(client, job_id, lambda j: j["status"] in TERMINAL)

    assert finished["status"] == "completed", finished
    assert not INTERNAL_ADDRESS.search(finished["message"] + (finished.get("error") or ""))
    assert model_names(client).count("through-outage") == 1
    assert (model_dir / "adapter_config.json").is_file()
    details = client.get(f"/api/models/{finished['model_id']}")
    assert details.status_code == 200, details.text


def test_the_trainers_metrics_count_the_job_and_its_step_times(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    port = metrics_port_for(int(stack.env["MODELFORGE_TRAINER_ADDR"].rsplit(":", 1)[1]), stack.env)

    def scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return {
            name: float(value)
            for name, value in re.findall(r"^(modelforge_trainer_[^\s]+)\s+(\S+)$", text, flags=re.MULTILINE)
        }

    before = scrape()
    job_id = start_training(client, training_request(tiny_causal_model, dataset, max_steps=5, name="measured"))
    assert wait_job(client, job_id, lambda j: j["status"] in TERMINAL)["status"] == "completed"
    after = scrape()

    completed = 'modelforge_trainer_jobs_finished_total{state="completed"}'
    assert after[completed] == before.get(completed, 0) + 1
    assert after['modelforge_trainer_jobs{state="completed"}'] >= 1
    assert after['modelforge_trainer_jobs{state="running"}'] == 0
    steps = after["modelforge_trainer_step_seconds_count"] - before.get("modelforge_trainer_step_seconds_count", 0)
    assert steps >= 3  # 5 steps, timed from the second report on
    assert after["modelforge_trainer_step_seconds_sum"] > before.get("modelforge_trainer_step_seconds_sum", 0)
    assert "modelforge_trainer_queue_depth" in after
