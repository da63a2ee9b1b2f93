"""Issue 14 at the gateway, through the real processes with API keys configured: the probes and
/metrics answer without a key, the query-string key works only on the event stream, a bad
Last-Event-ID is a 400 naming the header, and a chunked upload over the cap is refused while it
streams: 413, nothing stored, and the gateway process never wrote much more than the cap."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from stack_api import gateway_client, running_stack

from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e]

KEY = "e2e-hardening-key-0123456789"
CAP = 1024 * 1024
MIB = 1024 * 1024
BOUNDARY = "e2ehardeningboundary"
ROW = b'{"prompt": "What is the capital of France?", "completion": "Paris."}\n'


@pytest.fixture(scope="module")
def keyed_stack(
    tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("hardening-stack")
    env = stack_env_for(data_dir) | {"MODELFORGE_API_KEYS": f"ops:{KEY}", "MODELFORGE_MAX_UPLOAD_BYTES": str(CAP)}
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def client(keyed_stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(keyed_stack) as http:
        yield http


def test_probes_and_metrics_answer_without_a_key(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert all(ready.json()["checks"].values())
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "modelforge_gateway_requests_total" in metrics.text
    assert client.get("/api/datasets").status_code == 401


def test_the_query_string_key_counts_only_on_the_event_stream(client: httpx.Client) -> None:
    refused = client.get("/api/datasets", params={"access_token": KEY})
    assert refused.status_code == 401 and refused.json()["detail"].startswith("Missing API key")
    assert client.get("/api/datasets", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    # Authenticated by the query key, then an unknown job: 404, not 401.
    stream = client.get("/api/jobs/job_nope/events/stream", params={"access_token": KEY})
    assert stream.status_code == 404, stream.text


def test_a_non_ascii_digit_last_event_id_is_400_naming_the_header(client: httpx.Client) -> None:
    response = client.get(
        "/api/jobs/job_nope/events/stream",
        headers={"Authorization": f"Bearer {KEY}", "Last-Event-ID": "²".encode("latin-1")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def written_bytes(pid: int) -> int:
    """Bytes the process handed to write(2) and friends (files and sockets alike), from procfs."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def chunked_upload(size: int) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="huge.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    piece = ROW * (64 * 1024 // len(ROW))
    sent = 0
    while sent < size:
        sent += len(piece)
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs procfs I/O accounting")
def test_a_chunked_upload_over_the_cap_is_refused_while_it_streams(client: httpx.Client, keyed_stack: Stack) -> None:
    gateway_pid = keyed_stack.pid_records()["gateway"].pid
    before = written_bytes(gateway_pid)
    response = client.post(
        "/api/upload_dataset",
        content=chunked_upload(64 * MIB),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    # The spool file and everything else the gateway wrote meanwhile (logs, the answer).
    assert written_bytes(gateway_pid) - before <= CAP + MIB
    listed = client.get("/api/datasets", headers={"Authorization": f"Bearer {KEY}"}).json()["datasets"]
    assert all(d["filename"] != "huge.jsonl" for d in listed)
    datasets = Path(keyed_stack.env["MODELFORGE_DATA_DIR"]) / "datasets"
    assert not [p for p in datasets.rglob("huge*")]
    assert os.path.exists(f"/proc/{gateway_pid}")  # the gateway is still up
    assert client.get("/healthz").status_code == 200


MODEL_NAME_PROBES = ["~nosuchuser", "~nosuchuser/model", "/" + "a" * 300, "/proc/1/root", "/etc", "../../etc/passwd"]
MODEL_NAME_ROUTES = [
    ("/api/finetune/estimate_memory", "model_name", {}),
    ("/api/finetune/validate_custom_model", "repo_name", {}),
    ("/api/finetune/set_custom_model", "repo_name", {}),
    ("/api/start_training", "model_name", {"task": "text-generation", "dataset": "none.jsonl"}),
    ("/api/jobs", "model_name", {"task": "text-generation", "dataset": "none.jsonl"}),
]


@pytest.mark.parametrize(("path", "field", "rest"), MODEL_NAME_ROUTES, ids=[r[0] for r in MODEL_NAME_ROUTES])
def test_hostile_model_names_are_4xx_naming_the_field_on_every_route(
    client: httpx.Client, path: str, field: str, rest: dict[str, str]
) -> None:
    """The 500s of issue 14: home-directory expansion of an unknown user, overlong paths, /proc."""
    headers = {"Authorization": f"Bearer {KEY}"}
    answers = []
    for name in MODEL_NAME_PROBES:
        response = client.post(path, json={**rest, field: name}, headers=headers)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert field in response.text, (name, response.text)
        assert "Traceback" not in response.text
        answers.append(response.status_code)
    # One answer whatever the path: the refusal does not tell which host paths exist.
    assert len(set(answers[2:])) == 1, answers
