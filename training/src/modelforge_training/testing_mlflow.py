"""A real MLflow tracking server for tests (the `mlflow` package, SQLite backend, artifacts served,
on a free port) and a reader of what it received, over the same REST API the worker writes to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

# Not modelforge_common.testing: that module brings grpc, which the runtime never imports.
from modelforge_common.ports import free_port

# `mlflow server` imports most of mlflow before it answers /health: about 90 s on a loaded 2-core
# machine (three pytest workers), where 90 s was one second short.
START_TIMEOUT_S = 180.0


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """Starts `mlflow server` (a few seconds) and yields its URL; stops it afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        # Its own session: the server's gunicorn/uvicorn workers go with it.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


class MlflowReader:
    """What a tracking server holds, read over its REST API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, endpoint: str, **query: Any) -> dict[str, Any]:
        target = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(target, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())  # MLflow's JSON
        return answer

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())  # MLflow's JSON
        return answer

    def runs(self, experiment: str = "modelforge") -> list[dict[str, Any]]:
        experiment_id = self.get("experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
        runs: list[dict[str, Any]] = self.post("runs/search", {"experiment_ids": [experiment_id]}).get("runs", [])
        return runs

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        metrics = self.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
        return sorted((int(m.get("step", 0)), float(m["value"])) for m in metrics)

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        listed = self.get("artifacts/list", run_id=run_id, path=path).get("files", [])
        return sorted(f["path"] for f in listed)
