"""Steps the cross-service tests (tests/e2e, tests/browser) take against a running stack: start one with
extra settings, talk to its gateway, upload a dataset, start a small training job and wait on it.
tests/conftest.py puts this folder on sys.path, so test modules `from stack_api import ...`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from modelforge_devkit.sample_data import write_jsonl
from modelforge_devkit.stack import Stack

TERMINAL = ("completed", "error", "stopped")
WAIT_S = 240.0


@contextmanager
def running_stack(env: Mapping[str, str]) -> Iterator[Stack]:
    """A stack started from env, stopped on the way out whatever happened (a failed start included)."""
    running = Stack.from_environment(dict(env))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@contextmanager
def gateway_client(stack: Stack, timeout: float = 60) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=timeout) as http:
        yield http


def upload_jsonl(client: httpx.Client, rows: list[dict[str, Any]], path: Path) -> str:
    """Writes rows to path, uploads the file and returns the dataset's stored name."""
    write_jsonl(rows, path)
    with path.open("rb") as handle:
        response = client.post("/api/upload_dataset", files={"file": (path.name, handle, "application/jsonl")})
    assert response.status_code == 200, response.text
    return str(response.json()["filename"])


def training_request(model: Path, dataset: str, **overrides: Any) -> dict[str, Any]:
    """A start request for a short LoRA SFT job on a tiny model; overrides replace or add fields."""
    return {
        "task": "text-generation",
        "model_name": str(model),
        "strategy": "sft",
        "dataset": dataset,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 32,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "max_steps": 4,
    } | overrides


def start_training(client: httpx.Client, request: dict[str, Any]) -> str:
    """POST /api/start_training (the seed route); returns the job id."""
    response = client.post("/api/start_training", json=request)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


def wait_job(
    client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], wait_s: float = WAIT_S
) -> dict[str, Any]:
    """Polls GET /api/jobs/{job_id} until done(job) holds; services may be restarting in between, so an
    answer that is not a 200 JSON job is simply polled again."""
    deadline = time.monotonic() + wait_s
    last: Any = None
    while time.monotonic() < deadline:
        response = client.get(f"/api/jobs/{job_id}")
        last = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        if response.status_code == 200 and done(last):
            return dict(last)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never got there: {last}")


def wait_training_end(
    client: httpx.Client, job_id: str, wait_s: float = 300.0, poll_s: float = 0.3
) -> dict[str, Any]:
    """Polls GET /api/training_status?job_id= until the job has ended; returns its last status."""
    deadline = time.monotonic() + wait_s
    while True:
        status = client.get("/api/training_status", params={"job_id": job_id}).json()
        if status["status"] in TERMINAL:
            return dict(status)
        assert time.monotonic() < deadline, status
        time.sleep(poll_s)


def model_of_job(client: httpx.Client, job_id: str, base_model: str) -> dict[str, Any]:
    """The details of the model job_id registered (looked up among base_model's)."""
    listed = client.get("/api/models", params={"base_model": base_model}).json()["models"]
    for summary in listed:
        details = client.get(f"/api/models/{summary['model_id']}").json()
        if details["job_id"] == job_id:
            return dict(details)
    raise AssertionError(f"no model registered for {job_id}: {listed}")
