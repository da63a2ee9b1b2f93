"""Property-based fuzz of the whole OpenAPI document (schemathesis) against the real stack: nats-server,
trainer, registry, hardware and inference services and the gateway, each a real process started as
`make up` starts them.

Every phase runs (explicit examples, boundary coverage, random fuzzing, and the stateful phase
that follows the document's links from a created job or model to what reads, stops or deletes
it) with every check: no 5xx, every answer matching the statuses, headers, content types and
schemas the document declares, schema-invalid requests refused, schema-valid ones accepted. The
number of examples per operation is bounded and generation deterministic, so the run is reproducible and
takes a couple of minutes on 2 cores.

fuzz_hooks.py pins, in schema-valid requests only, what a schema cannot say (which model folders
and datasets exist here, what this CPU machine trains, what bytes a dataset holds) and drops 503s
that say the Hugging Face Hub cannot be reached (these machines have none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stack_api import gateway_client, running_stack

from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HERE = Path(__file__).parent
EXAMPLES_PER_OPERATION = 8
DATASET = "fuzz-prompts.jsonl"
ROWS = b"".join(b'{"prompt": "Name %d", "completion": "Number %d."}\n' % (i, i) for i in range(16))


@pytest.fixture(scope="module")
def fuzz_stack(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env_for: Callable[[Path], dict[str, str]],
    tiny_causal_model: Path,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("fuzz-stack")
    env = stack_env_for(data_dir) | {
        "MODELFORGE_MODEL_ROOTS": os.pathsep.join([str(tiny_causal_model.parent), str(data_dir)]),
    }
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def uploaded_dataset(fuzz_stack: Stack) -> str:
    with gateway_client(fuzz_stack) as client:
        response = client.post("/api/upload_dataset", files={"file": (DATASET, ROWS, "application/jsonl")})
    assert response.status_code == 200, response.text
    return str(response.json()["filename"])


def run_schemathesis(stack: Stack, model: Path, dataset: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    schema_path = report_dir / "openapi.json"
    with gateway_client(stack) as client:
        schema_path.write_text(json.dumps(client.get("/openapi.json").json()))
    config = report_dir / "schemathesis.toml"
    # Streams (SSE) are read for a bounded number of events: a job's stream ends only with the job.
    config.write_text("max-stream-events = 5\n")
    command = [
        str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run", str(schema_path),
        "--url", stack.gateway_url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "60",
        "--continue-on-failure",
        "--suppress-health-check", "all",
        "--no-color",
        "--report", "ndjson",
        "--report-dir", str(report_dir),
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "MODELFORGE_FUZZ_MODEL": str(model),
        "MODELFORGE_FUZZ_DATASET": dataset,
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=840, check=False)


def test_every_operation_of_the_real_stack_survives_the_fuzz(
    fuzz_stack: Stack, uploaded_dataset: str, tiny_causal_model: Path, tmp_path: Path
) -> None:
    result = run_schemathesis(fuzz_stack, tiny_causal_model, uploaded_dataset, tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-4000:]
    assert "Tested:" in summary, output[-6000:]
    failures = output[output.find("FAILURES"):][:15000]
    assert result.returncode == 0, f"{failures}\n...\n{summary}"
    # Every generating phase ran and passed (the examples phase has nothing to send: the document
    # carries no request examples), the stateful one included.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    assert "❌" not in summary, summary
    # And no service logged a traceback while being fuzzed.
    for log in fuzz_stack.run_dir.glob("*.log"):
        assert "Traceback (most recent call last)" not in log.read_text(errors="replace"), log.name
