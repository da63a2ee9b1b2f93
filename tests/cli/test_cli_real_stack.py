"""The `modelforge` CLI against the real stack (nats-server, four services, gateway on free ports):
datasets, estimate, train --follow to completion, a follow that survives a forced WebSocket
disconnect with no event lost or repeated, jobs, models, generate and chat, and the error paths
with their exit codes (1 for API errors, 2 for usage errors, never a traceback).

Commands run in-process through typer's CliRunner (one subprocess checks the installed entry
point). The disconnect goes through a small TCP proxy that cuts the first connection mid-stream and
holds the reconnect until the job has moved on, so the resumed stream must fill a real gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from typer.testing import CliRunner

from modelforge_cli.main import app as cli_app
from modelforge_common.ports import free_port
from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = ("completed", "error", "stopped")
GATE_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


Run = Callable[..., Outcome]


@pytest.fixture(scope="module")
def run(stack: Stack) -> Run:
    """`modelforge --url <gateway> ARGS...` in-process; no traceback ever reaches the output."""
    runner = CliRunner(env={"COLUMNS": "200", "MODELFORGE_URL": None, "MODELFORGE_API_KEY": None})

    def invoke(*args: str, url: str | None = None, input: str | None = None) -> Outcome:
        result = runner.invoke(cli_app, ["--url", url or stack.gateway_url, *args], input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unhandled {type(result.exception).__name__}") from result.exception
        outcome = Outcome(result.exit_code, result.stdout, result.stderr)
        assert "Traceback" not in outcome.stdout + outcome.stderr
        return outcome

    return invoke


@pytest.fixture(scope="module")
def dataset(run: Run, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_jsonl(text_generation_rows(24, seed=11), tmp_path_factory.mktemp("cli") / "cli-chat.jsonl")
    uploaded = run("datasets", "upload", str(path))
    assert uploaded.exit_code == 0, uploaded.stderr
    assert "uploaded cli-chat.jsonl: 24 examples" in uploaded.stdout
    return "cli-chat.jsonl"


def train_args(model: Path, dataset: str, max_steps: int) -> list[str]:
    return [
        "train", "--task", "text-generation", "--model", str(model), "--dataset", dataset,
        "--strategy", "sft", "--epochs", "1", "--lr", "0.001", "--batch-size", "2",
        "--max-seq-length", "64", "--max-steps", str(max_steps),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def followed(run: Run, tiny_causal_model: Path, dataset: str) -> Outcome:
    """A job started and followed to its end by `train --follow --json`."""
    return run(*train_args(tiny_causal_model, dataset, max_steps=4), "--follow", "--json")


def seqs_of(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if isinstance(e.get("seq"), int) and e["seq"] > 0]


def test_installed_entry_point_reports_status(stack: Stack) -> None:
    entry = Path(sys.executable).with_name("modelforge")
    done = subprocess.run(
        [str(entry), "--url", stack.gateway_url, "status", "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["health"] == {"status": "healthy", "version": "v2"}
    assert status["hardware"]["cpu_cores"] >= 1
    assert status["detect"]["profile"]
    assert status["errors"] == {}


def test_datasets_list_and_show(run: Run, dataset: str) -> None:
    listed = run("datasets", "list", "--json")
    assert listed.exit_code == 0
    assert any(d["filename"] == dataset and d["num_examples"] == 24 for d in json.loads(listed.stdout)["datasets"])
    shown = run("datasets", "show", dataset, "--json")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["dataset"]["filename"] == dataset
    assert dataset in run("datasets", "list").stdout


def test_upload_with_bad_rows_lists_each_problem_and_exits_1(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad-rows.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n[1, 2]\n', encoding="utf-8")
    outcome = run("datasets", "upload", str(bad))
    assert outcome.exit_code == 1
    assert "line 2" in outcome.stderr and "line 3" in outcome.stderr, outcome.stderr
    assert "bad-rows.jsonl" not in run("datasets", "list").stdout


def test_estimate_table_and_json(run: Run, tiny_causal_model: Path) -> None:
    shown = run("estimate", "--model", str(tiny_causal_model), "--strategy", "sft", "--batch-size", "2")
    assert shown.exit_code == 0, shown.stderr
    assert "total" in shown.stdout and "fits" in shown.stdout
    answer = json.loads(run("estimate", "--model", str(tiny_causal_model), "--strategy", "qlora", "--json").stdout)
    assert answer["fits"] is True and answer["breakdown"]["total_bytes"] > 0


def test_train_follow_runs_to_completion(followed: Outcome) -> None:
    assert followed.exit_code == 0, followed.stderr
    events = followed.json_lines()
    seqs = seqs_of(events)
    assert seqs == sorted(set(seqs)), seqs
    assert any(e.get("type") == "progress" and isinstance(e.get("loss"), float) for e in events)
    assert events[-1]["status"] == "completed" and events[-1]["model_id"]


def test_jobs_list_and_show(run: Run, followed: Outcome) -> None:
    job_id = followed.json_lines()[-1]["job_id"]
    listed = run("jobs", "list", "--json")
    assert listed.exit_code == 0
    body = json.loads(listed.stdout)
    jobs = body["jobs"] if isinstance(body, dict) and "jobs" in body else [body]
    assert any(job.get("job_id") == job_id for job in jobs), body
    shown = run("jobs", "show", job_id, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"] == "completed"
    followed_again = run("jobs", "follow", job_id)
    assert followed_again.exit_code == 0 and "completed" in followed_again.stdout


def test_models_generate_chat_and_delete(run: Run, followed: Outcome) -> None:
    model_id = followed.json_lines()[-1]["model_id"]
    assert model_id in {m["model_id"] for m in json.loads(run("models", "list", "--json").stdout)["models"]}
    details = json.loads(run("models", "show", model_id, "--json").stdout)
    assert isinstance(details["metrics"]["final_loss"], float)
    assert "final_loss" in run("models", "show", model_id).stdout

    generated = run("generate", model_id, "Where does the red fox live?", "--max-new-tokens", "6", "--temperature", "0")
    assert generated.exit_code == 0, generated.stderr
    assert "tokens" in generated.stderr
    answer = json.loads(run("generate", model_id, "Hello", "--max-new-tokens", "6", "--json").stdout)
    assert answer["streamed"] is True and 0 < answer["tokens_generated"] <= 6
    chat = run("chat", model_id, "--max-new-tokens", "4", input="hello there\n/exit\n")
    assert chat.exit_code == 0 and "model> " in chat.stdout

    deleted = run("models", "delete", model_id, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    gone = run("models", "show", model_id)
    assert gone.exit_code == 1
    assert gone.stderr.strip().splitlines() == [f"error: GET /api/models/{model_id} -> 404: Model {model_id} not found"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--task", "text-generation", "--model", "m", "--dataset", "missing.jsonl"], "dataset"),
        (["jobs", "show", "train_00000000_000000_none"], "-> 404"),
        (["estimate", "--model", "m", "--strategy", "nope"], "-> 400"),
    ],
)
def test_api_errors_exit_1_with_one_line(run: Run, args: list[str], fragment: str) -> None:
    outcome = run(*args)
    assert outcome.exit_code == 1
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], outcome.stderr


def test_unreachable_gateway_exits_1(run: Run) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    outcome = run("models", "list", url=closed)
    assert outcome.exit_code == 1 and "cannot reach ModelForge" in outcome.stderr


@pytest.mark.parametrize(
    "args", [["train"], ["estimate", "--strategy", "sft"], ["no-such-command"], ["jobs", "follow"]]
)
def test_usage_errors_exit_2(run: Run, args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_stopped_job_follow_exits_1(run: Run, stack: Stack, tiny_causal_model: Path, dataset: str) -> None:
    started = run(*train_args(tiny_causal_model, dataset, max_steps=5000))
    assert started.exit_code == 0, started.stderr
    job_id = started.stdout.split("started job", 1)[1].strip()
    stopped = run("jobs", "stop", job_id)
    assert stopped.exit_code == 0, stopped.stderr
    followed = run("jobs", "follow", job_id)
    assert followed.exit_code == 1
    assert f"job {job_id} stopped" in followed.stderr


class DroppingProxy:
    """Forwards loopback TCP connections to the gateway. Once `cut_requested` is set and the first
    connection has carried more than the handshake, that connection is cut abruptly (RST, no close
    frame); the next one is forwarded only when `gate` is set, i.e. once the job has moved on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_requested = threading.Event()
        self.cut = threading.Event()
        self.gate = threading.Event()
        self.connections = 0
        self._streaming = threading.Event()  # the first connection carried a frame after the handshake
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client, self.connections), daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        if number > 1:
            self.gate.wait(GATE_TIMEOUT_S)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        if number == 1:
            threading.Thread(target=self._cut_when_asked, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, number == 1)

    def _cut_when_asked(self, *sockets: socket.socket) -> None:
        self.cut_requested.wait()
        self._streaming.wait()
        self.cut.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                sock.shutdown(socket.SHUT_RDWR)

    def _pump(self, source: socket.socket, sink: socket.socket, first_downstream: bool) -> None:
        chunks = 0
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                chunks += 1
                if first_downstream and chunks >= 2:
                    self._streaming.set()
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()


async def observe(ws_url: str, job_id: str, proxy: DroppingProxy, events: list[dict[str, Any]]) -> None:
    """A reference client on a direct connection: every event of the job. It asks the proxy to cut
    the CLI's stream at the first log line (the worker has started), and opens the gate for the
    reconnect at the first event after the cut (one the CLI missed live)."""
    async with websockets.connect(f"{ws_url}?job_id={job_id}&since=0") as sock, asyncio.timeout(300):
        async for raw in sock:
            event = json.loads(raw)
            if event.get("job_id") != job_id or event.get("type") == "heartbeat":
                continue
            events.append(event)
            if proxy.cut.is_set():
                proxy.gate.set()
            elif event.get("type") == "log":
                proxy.cut_requested.set()
            if event.get("type") == "status" and event.get("status") in TERMINAL and len(events) > 1:
                proxy.cut_requested.set()
                proxy.gate.set()
                return


@pytest.fixture
def proxy(stack: Stack) -> Iterator[DroppingProxy]:
    dropping = DroppingProxy(int(stack.gateway_url.rsplit(":", 1)[1]))
    yield dropping
    dropping.close()


def test_follow_survives_a_dropped_connection(
    run: Run, stack: Stack, proxy: DroppingProxy, tiny_causal_model: Path, dataset: str
) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        body = {
            "task": "text-generation", "model_name": str(tiny_causal_model), "dataset": dataset, "strategy": "sft",
            "num_train_epochs": 1, "per_device_train_batch_size": 2, "max_seq_length": 64, "max_steps": 4,
            "learning_rate": 1e-3,
        }  # fmt: skip
        started = client.post("/api/start_training", json=body)
        assert started.status_code == 200, started.text
        job_id = started.json()["job_id"]

    reference: list[dict[str, Any]] = []
    ws_url = stack.gateway_url.replace("http://", "ws://") + "/ws/training"
    observer = threading.Thread(target=lambda: asyncio.run(observe(ws_url, job_id, proxy, reference)))
    observer.start()
    followed = run("jobs", "follow", job_id, "--json", url=f"http://127.0.0.1:{proxy.port}")
    observer.join(timeout=300)

    assert followed.exit_code == 0, followed.stderr
    assert proxy.cut.is_set() and proxy.connections >= 2, "the proxy never cut the stream"
    assert "reconnect" in followed.stderr.lower(), followed.stderr
    cli_seqs = seqs_of(followed.json_lines())
    assert len(cli_seqs) == len(set(cli_seqs)), f"repeated events: {cli_seqs}"
    assert cli_seqs == sorted(cli_seqs)
    # Every event the reference client saw from the CLI's first one on reached the CLI too.
    expected = {seq for seq in seqs_of(reference[1:]) if seq >= cli_seqs[0]}
    assert expected, reference
    assert expected <= set(cli_seqs), f"lost events: {sorted(expected - set(cli_seqs))}"
    assert followed.json_lines()[-1]["status"] == "completed"
