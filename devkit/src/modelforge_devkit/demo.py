"""`make demo`: a tiny fine-tune from nothing to generated text, driven by the `modelforge` CLI.

Builds a tiny random-weight model and a sample dataset locally (no download), brings the stack up if
the gateway does not answer, then runs the same commands a user would type: `datasets upload`,
`train`, `jobs follow` (the CLI's live progress bar over the WebSocket) and `generate` (streamed).
Each command is printed before it runs, so the demo doubles as a CLI tour.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
from rich.console import Console

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack
from modelforge_devkit.tiny_models import build_tiny_model

console = Console()
PROMPT = "Where does the red fox live?"


def _gateway_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def modelforge(url: str, *args: str, capture: bool = False) -> str:
    """Runs `modelforge --url URL ARGS...` (the CLI of this venv), showing the command; exits with
    the CLI's exit code when it fails (its one-line error is already on stderr)."""
    console.print(f"[bold cyan]$ modelforge {shlex.join(args)}[/]")
    command = [sys.executable, "-m", "modelforge_cli", "--url", url, *args]
    done = subprocess.run(command, stdout=subprocess.PIPE if capture else None, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.returncode)
    return done.stdout or ""


def _model_of(url: str, job_id: str) -> str:
    """The model the job registered: from GET /api/jobs/{id}, or the newest model on a gateway without it."""
    with httpx.Client(base_url=url, timeout=30) as client:
        job = client.get(f"/api/jobs/{job_id}")
        if job.status_code == 200 and job.json().get("model_id"):
            return str(job.json()["model_id"])
        models = client.get("/api/models").json()["models"]
    return str(max(models, key=lambda model: model["created_at"])["model_id"])


def main() -> int:
    stack = Stack.from_environment()
    url = stack.gateway_url
    work = Path(os.environ.get("MODELFORGE_DEMO_DIR", ".demo")).resolve()
    model_dir = work / "tiny-llama"
    if not (model_dir / "config.json").exists():
        console.print(f"building a tiny random-weight Llama in {model_dir}")
        build_tiny_model(model_dir, "causal")
    dataset = write_jsonl(text_generation_rows(60, seed=7), work / "demo-chat.jsonl")

    if not _gateway_up(url):
        console.print("gateway not answering: starting the stack (make up)")
        if stack.running():
            raise SystemExit("some services run but the gateway does not answer: run `make down` first")
        stack.start()

    modelforge(url, "datasets", "upload", str(dataset))
    started = modelforge(
        url, "train", "--task", "text-generation", "--model", str(model_dir), "--dataset", dataset.name,
        "--strategy", "sft", "--provider", "huggingface", "--epochs", "2", "--batch-size", "4",
        "--max-seq-length", "64", "--lr", "3e-3", "--json", capture=True,
    )  # fmt: skip
    job_id = json.loads(started)["job_id"]
    console.print(f"training job {job_id}")
    modelforge(url, "jobs", "follow", job_id)
    model_id = _model_of(url, job_id)
    modelforge(url, "models", "show", model_id)
    modelforge(url, "generate", model_id, PROMPT, "--max-new-tokens", "24", "--temperature", "0")
    console.print(f"\nopen the web console at [bold]{url}/[/] to see the job's loss curve and try the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
