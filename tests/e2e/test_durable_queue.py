"""Issue 7's durable job queue through real processes: two trainer-svc replicas consume one JetStream
work queue, job state of record lives in registry-svc, and jobs survive a replica's kill -9, a NATS
restart, a registry restart, and a gateway restart (a client resuming with `since` misses nothing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets
from stack_api import TERMINAL, WAIT_S, running_stack, training_request, upload_jsonl, wait_job

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]) -> Iterator[Stack]:
    env = stack_env_for(tmp_path_factory.mktemp("durable"))
    env.update(
        {
            "MODELFORGE_TRAINER_REPLICAS": "2",
            "MODELFORGE_JOB_ACK_WAIT_S": "6",  # a dead replica's job is redelivered after this
            "MODELFORGE_JOB_RECORD_INTERVAL_S": "0.5",
            "MODELFORGE_MEMORY_CHECK": "false",
        }
    )
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_jsonl(client, text_generation_rows(16, seed=5), tmp_path_factory.mktemp("data") / "chat.jsonl")


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def assert_one_gapless_history(history: list[dict[str, Any]], final: str) -> None:
    seqs = [event["seq"] for event in history]
    assert seqs == sorted(set(seqs)), seqs  # no duplicates, in order
    terminal = [event for event in history if event["type"] == "status" and event["status"] in TERMINAL]
    assert [event["status"] for event in terminal] == [final]
    assert history[-1] is terminal[0]


def models_of(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/api/models")
    assert response.status_code == 200, response.text
    body = response.json()
    return list(body["models"] if isinstance(body, dict) else body)


def worker_of(stack: Stack, job_id: str) -> tuple[str, psutil.Process]:
    """The trainer replica running the job and its worker process."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for name, pid in stack.running().items():
            if not name.startswith("trainer"):
                continue
            for child in psutil.Process(pid).children(recursive=True):
                try:
                    if any(job_id in part for part in child.cmdline()):
                        return name, child
                except psutil.Error:
                    continue
        time.sleep(0.2)
    raise AssertionError(f"no worker runs {job_id}")


def test_two_replicas_run_three_queued_jobs_exactly_once(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    job_ids = [submit(client, training_request(tiny_causal_model, dataset, name=f"queued-{n}")) for n in range(3)]
    replicas = {worker_of(stack, job_id)[0] for job_id in job_ids[:2]}
    finished = [wait_job(client, job_id, lambda j: j["status"] in TERMINAL) for job_id in job_ids]

    assert [j["status"] for j in finished] == ["completed"] * 3, finished
    assert [j["attempts"] for j in finished] == [1, 1, 1]
    assert replicas == {"trainer", "trainer-2"}  # both replicas took jobs from the one queue
    names = [m["name"] for m in models_of(client) if m["name"].startswith("queued-")]
    assert sorted(names) == ["queued-0", "queued-1", "queued-2"]  # one model per job: none ran twice
    assert len({j["model_id"] for j in finished}) == 3
    for job_id in job_ids:
        assert_one_gapless_history(events(client, job_id), "completed")
    listed = client.get("/api/jobs", params={"status": "completed"}).json()
    assert set(job_ids) <= {j["job_id"] for j in listed["jobs"]}


def test_kill_9_of_the_running_replica_redelivers_the_job_from_its_checkpoint(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    # Long enough that a loaded machine's status polls see it running with a checkpoint saved (20 steps of
    # the tiny model can end between two polls).
    job_id = submit(client, training_request(tiny_causal_model, dataset, max_steps=80, save_steps=2, name="killed"))
    replica, worker = worker_of(stack, job_id)
    checkpoints = Path(stack.env["MODELFORGE_DATA_DIR"]) / "checkpoints" / job_id

    def saved() -> bool:  # a checkpoint the Trainer finished writing
        return any((c / "trainer_state.json").is_file() for c in checkpoints.glob("checkpoint-*"))

    wait_job(client, job_id, lambda j: j["progress"] > 0 and saved())

    os.kill(stack.running()[replica], signal.SIGKILL)
    worker.wait(timeout=60)  # the worker dies with its trainer (PR_SET_PDEATHSIG), no orphan keeps training
    stack.stop_one(replica)
    stack.start_service(replica)  # back while the job is redelivered (to either replica)
    finished = wait_job(client, job_id, lambda j: j["status"] in TERMINAL)

    assert finished["status"] == "completed", finished
    assert finished["attempts"] == 2
    history = events(client, job_id)
    assert_one_gapless_history(history, "completed")
    restarted = [e["message"] for e in history if e["type"] == "status" and "restarted" in e["message"]]
    assert len(restarted) == 1 and "resuming from checkpoint-" in restarted[0], restarted
    assert [m["name"] for m in models_of(client)].count("killed") == 1


def test_nats_killed_and_restarted_mid_training_the_job_completes(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    # Long enough that the outage falls inside the run: the record's progress is written every 2 s
    # at most, so "running" (written at once) is what the test waits for.
    job_id = submit(client, training_request(tiny_causal_model, dataset, max_steps=24, name="through-nats-restart"))
    wait_job(client, job_id, lambda j: j["status"] == "running")
    stack.stop_one("nats", sig=signal.SIGKILL)
    time.sleep(1.0)
    stack.start_nats()

    finished = wait_job(client, job_id, lambda j: j["status"] in TERMINAL)
    assert finished["status"] == "completed", finished
    assert finished["attempts"] == 1  # it never stopped: no redelivery while its replica lived
    assert [m["name"] for m in models_of(client)].count("through-nats-restart") == 1


def test_registry_restart_loses_no_job_or_model_row(client: httpx.Client, stack: Stack) -> None:
    jobs_before = client.get("/api/jobs").json()
    models_before = models_of(client)
    assert jobs_before["total"] >= 5

    stack.stop_one("registry")
    stack.start_service("registry")

    jobs_after = client.get("/api/jobs").json()
    assert jobs_after["total"] == jobs_before["total"]
    assert {(j["job_id"], j["status"], j["model_id"]) for j in jobs_after["jobs"]} == {
        (j["job_id"], j["status"], j["model_id"]) for j in jobs_before["jobs"]
    }
    assert {m["model_id"] for m in models_of(client)} == {m["model_id"] for m in models_before}


async def read_until(url: str, stop: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with websockets.connect(url) as socket, asyncio.timeout(WAIT_S):
        await socket.recv()  # the status snapshot at connect time, not an event of the history
        async for raw in socket:
            event = json.loads(raw)
            if event.get("type") == "heartbeat":
                continue
            received.append(event)
            if stop(event):
                break
    return received


def test_gateway_restart_a_client_resuming_with_since_gets_every_event_once(
    client: httpx.Client, stack: Stack, dataset: str, tiny_causal_model: Path
) -> None:
    job_id = submit(client, training_request(tiny_causal_model, dataset, max_steps=10, name="through-gateway-restart"))
    ws_url = stack.gateway_url.replace("http", "ws") + "/ws/training"

    before = asyncio.run(read_until(f"{ws_url}?job_id={job_id}&since=0", lambda e: e["type"] == "progress"))
    stack.stop_one("gateway")
    stack.start_service("gateway")
    last = before[-1]["seq"]
    after = asyncio.run(
        read_until(
            f"{ws_url}?job_id={job_id}&since={last}", lambda e: e["type"] == "status" and e["status"] in TERMINAL
        )
    )

    seqs = [e["seq"] for e in before + after]
    assert seqs == list(range(1, seqs[-1] + 1)), seqs  # every event exactly once, across the restart
    assert after[-1]["status"] == "completed"
    assert [e["seq"] for e in events(client, job_id)] == seqs
