"""Issue 14's data cases through the real processes: poison uploads are a 400 naming the line and store
nothing (the listing keeps answering), model paths outside the model roots are one 400 whatever exists,
datasets are deleted (409 while a job uses one; the CLI too), and each service's /metrics counts what
happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelforge_common.metrics import METRICS_PORT_OFFSET
from modelforge_common.settings import port_of
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e]

PAIR = b'{"prompt": "What is a fox?", "completion": "A small wild dog."}'
TERMINAL = ("completed", "error", "stopped")


def with_bad_line_3(bad: bytes) -> bytes:
    lines = [PAIR] * 12
    lines.insert(2, bad)
    return b"\n".join(lines) + b"\n"


POISON = [
    ("lone-surrogate-key", b'{"\\udc80k": "v", "prompt": "p", "completion": "c"}', "unpaired surrogate"),
    ("lone-surrogate-value", b'{"prompt": "\\ud800", "completion": "c"}', "unpaired surrogate"),
    ("5000-digit-number", b'{"prompt": "p", "completion": "c", "n": ' + b"9" * 5000 + b"}", "5000 digits"),
    ("200000-brackets", b"[" * 200_000, "nests deeper"),
    ("stray-carriage-return", b'{"prompt": "p",\r"completion": "c"}', "carriage return"),
    ("nul-byte", b'{"prompt": "p", "completion": "c"}\x00', "NUL byte"),
    ("invalid-utf8", b'{"prompt": "\xff", "completion": "c"}', "not UTF-8"),
]


def upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post("/api/upload_dataset", files={"file": (name, content, "application/jsonl")})


def dataset_files(stack: Stack) -> list[str]:
    return sorted(p.name for p in (Path(stack.env["MODELFORGE_DATA_DIR"]) / "datasets").iterdir())


@pytest.mark.parametrize(("content", "fragment"), [p[1:] for p in POISON], ids=[p[0] for p in POISON])
def test_poison_uploads_are_400_with_the_line_and_store_nothing(
    client: httpx.Client, stack: Stack, content: bytes, fragment: str
) -> None:
    files_before = dataset_files(stack)
    response = upload(client, "poison.jsonl", with_bad_line_3(content))
    assert response.status_code == 400, response.text
    text = json.dumps(response.json())
    assert "line 3" in text and fragment in text, text
    listing = client.get("/api/datasets")
    assert listing.status_code == 200
    assert "poison.jsonl" not in [d["filename"] for d in listing.json()["datasets"]]
    assert dataset_files(stack) == files_before


HOSTILE_MODELS = ["~nosuchuser", "/" + "a" * 300, "/proc/1/root", "/etc", "/no/such/folder", "../../.."]


@pytest.mark.parametrize("model_name", HOSTILE_MODELS)
def test_model_paths_outside_the_roots_are_a_400_naming_the_field(client: httpx.Client, model_name: str) -> None:
    answers = [
        client.post("/api/finetune/estimate_memory", json={"model_name": model_name}),
        client.post("/api/finetune/validate_custom_model", json={"repo_name": model_name}),
        client.post("/api/jobs", json={"task": "text-generation", "model_name": model_name, "dataset": "x.jsonl"}),
    ]
    for response in answers:
        assert response.status_code == 400, (response.request.url, response.text)
        text = json.dumps(response.json())
        assert "model_name" in text or "repo_name" in text, text


def test_a_refusal_does_not_tell_whether_the_path_exists(client: httpx.Client) -> None:
    bodies = {
        "/api/finetune/estimate_memory": {},
        "/api/jobs": {"task": "text-generation", "dataset": "x.jsonl"},
    }
    for path, body in bodies.items():
        errors = []
        for name in ("/etc", "/no/such/folder"):
            response = client.post(path, json={**body, "model_name": name})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert "MODELFORGE_MODEL_ROOTS" in error, error
            errors.append(error.replace(name, "<name>"))
        assert errors[0] == errors[1]


def wait_for_job(client: httpx.Client, job_id: str, wanted: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job.get("status") in wanted:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {wanted}: {job}")


def test_datasets_are_deleted_but_not_while_a_job_uses_them(
    client: httpx.Client, stack: Stack, tiny_causal_model: Path
) -> None:
    rows = b"\n".join([PAIR] * 24) + b"\n"
    used = upload(client, "in-use.jsonl", rows).json()["filename"]
    spare = upload(client, "spare.jsonl", rows).json()["filename"]
    started = client.post("/api/jobs", json={
        "task": "text-generation", "model_name": str(tiny_causal_model), "dataset": used,
        "num_train_epochs": 200, "per_device_train_batch_size": 2, "max_seq_length": 32,
    })
    assert started.status_code in (200, 201, 202), started.text
    job_id = started.json()["job_id"]
    try:
        refused = client.delete(f"/api/datasets/{used}")
        assert refused.status_code == 409, refused.text
        assert job_id in refused.json()["error"]
        assert used in dataset_files(stack)
    finally:
        client.post(f"/api/jobs/{job_id}/cancel")
        wait_for_job(client, job_id, TERMINAL)
    deleted = client.delete(f"/api/datasets/{used}")
    assert deleted.status_code == 200, deleted.text
    assert used not in dataset_files(stack)
    assert client.delete(f"/api/datasets/{used}").status_code == 404

    cli = subprocess.run(
        [sys.executable, "-m", "modelforge_cli", "--url", stack.gateway_url, "datasets", "delete", spare, "--yes"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"}, check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"Dataset {spare} deleted" in cli.stdout
    listed = [d["filename"] for d in client.get("/api/datasets").json()["datasets"]]
    assert used not in listed and spare not in listed


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_each_service_serves_metrics_beside_its_grpc_port(client: httpx.Client, stack: Stack) -> None:
    assert upload(client, "bad.jsonl", with_bad_line_3(b"{")).status_code == 400
    registry = scrape(port_of(stack.env["MODELFORGE_REGISTRY_ADDR"]) + METRICS_PORT_OFFSET)
    assert ('modelforge_grpc_server_handled_total{code="INVALID_ARGUMENT",method="UploadDataset",'
            'service="modelforge.v1.RegistryService"}') in registry
    assert "modelforge_registry_datasets " in registry and "modelforge_registry_models " in registry
    for name in ("trainer", "hardware", "inference"):
        text = scrape(port_of(stack.env[f"MODELFORGE_{name.upper()}_ADDR"]) + METRICS_PORT_OFFSET)
        assert "modelforge_grpc_server_handling_seconds" in text, name
