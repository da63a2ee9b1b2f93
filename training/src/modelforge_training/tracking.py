"""Experiment tracking of one job inside the worker: TensorBoard event files always, MLflow when
MODELFORGE_MLFLOW_URI names a tracking server.

TensorBoard: <job dir>/tensorboard/ (beside the job's worker.log), one scalar per logged value:
train/loss, train/learning_rate, train/grad_norm, ... per optimizer step, eval/<metric> at the end.

MLflow is spoken over its REST API (api/2.0/mlflow) with the standard library: no client package in
the worker. A run per job in the experiment MODELFORGE_MLFLOW_EXPERIMENT (default "modelforge")
holds the job's settings as params, the same series as metrics (step-indexed), the final
evaluation metrics, lineage tags (job id, base model, dataset and its sha256, task, strategy,
provider) and, when the server serves artifacts, the adapter's files under adapter/ (otherwise
the adapter folder as a tag). Tracking never fails a job: a tracking server that errors is logged
once and left alone for the rest of the job.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from modelforge_training.callbacks import finite_number
from modelforge_training.scalar_events import ScalarEventFile
from modelforge_training.spec import TrainingJobSpec, recorded_config

log = logging.getLogger(__name__)

MLFLOW_URI_ENV = "MODELFORGE_MLFLOW_URI"
MLFLOW_EXPERIMENT_ENV = "MODELFORGE_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "modelforge"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_FLUSH_S = 5
# Series values logged during training reach MLflow this often, in one request from a thread of their
# own: a request per logged step in the training loop would wait on the server every step.
MLFLOW_SEND_S = 2.0
# MLflow's limits: a param value of at most 6000 characters, 100 params / 1000 metrics per batch.
_MAX_PARAM_CHARS = 6000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_ARTIFACTS_PREFIX = "mlflow-artifacts:/"
_REQUEST_TIMEOUT_S = 15.0


class MlflowError(RuntimeError):
    pass


class MlflowRest:
    """The few MLflow REST calls a run needs."""

    def __init__(self, base_url: str, timeout_s: float = _REQUEST_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: bytes | None, content_type: str) -> bytes:
        request = urllib.request.Request(
            f"{self.base_url}/{path}", data=body, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data: bytes = response.read()
            return data
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise MlflowError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MlflowError(f"{method} {path}: {exc}") from None

    def call(self, method: str, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        if method == "GET":
            query = urllib.parse.urlencode(payload)
            raw = self._request("GET", f"api/2.0/mlflow/{endpoint}?{query}", None, "application/json")
        else:
            raw = self._request(method, f"api/2.0/mlflow/{endpoint}", json.dumps(payload).encode(), "application/json")
        answer: dict[str, Any] = json.loads(raw or b"{}")  # MLflow's JSON
        return answer

    def _experiment_by_name(self, name: str) -> str:
        reply = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
        return str(reply["experiment"]["experiment_id"])

    def experiment_id(self, name: str) -> str:
        try:
            return self._experiment_by_name(name)
        except MlflowError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        try:
            return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])
        except MlflowError as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):  # another job created it meanwhile
                raise
            return self._experiment_by_name(name)

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> dict[str, Any]:
        payload = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": _now_ms(),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        info: dict[str, Any] = self.call("POST", "runs/create", payload)["run"]["info"]
        return info

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[dict[str, Any]] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        metric_list = list(metrics)
        param_list = [{"key": k, "value": v[:_MAX_PARAM_CHARS]} for k, v in (params or {}).items()]
        tag_list = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        while metric_list or param_list or tag_list:
            payload = {
                "run_id": run_id,
                "metrics": metric_list[:_METRICS_PER_BATCH],
                "params": param_list[:_PARAMS_PER_BATCH],
                "tags": tag_list[:_PARAMS_PER_BATCH],
            }
            self.call("POST", "runs/log-batch", payload)
            metric_list = metric_list[_METRICS_PER_BATCH:]
            param_list = param_list[_PARAMS_PER_BATCH:]
            tag_list = tag_list[_PARAMS_PER_BATCH:]

    def finish(self, run_id: str, status: str) -> None:
        self.call("POST", "runs/update", {"run_id": run_id, "status": status, "end_time": _now_ms()})

    def upload(self, artifact_uri: str, local: Path, relative: str) -> None:
        """PUT one file into a run's artifacts (a server that serves artifacts: mlflow-artifacts:/)."""
        location = artifact_uri[len(_ARTIFACTS_PREFIX) :].strip("/")
        target = "/".join(urllib.parse.quote(part) for part in f"{location}/{relative}".split("/"))
        path = f"api/2.0/mlflow-artifacts/artifacts/{target}"
        self._request("PUT", path, local.read_bytes(), "application/octet-stream")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""


def lineage_tags(job: TrainingJobSpec) -> dict[str, str]:
    config = job.config
    tags = {
        "mlflow.runName": config.name or job.job_id,
        "modelforge.job_id": job.job_id,
        "modelforge.base_model": config.model_name,
        "modelforge.task": config.task,
        "modelforge.strategy": config.strategy,
        "modelforge.provider": config.provider,
        "modelforge.dataset": config.dataset,
        "modelforge.dataset_sha256": _file_sha256(job.dataset_path),
    }
    if config.eval_dataset:
        tags["modelforge.eval_dataset"] = config.eval_dataset
    return {k: v for k, v in tags.items() if v}


def tensorboard_tags(values: dict[str, float]) -> dict[str, float]:
    """MLflow's metric names as TensorBoard tags: train_loss -> train/loss, eval_perplexity -> eval/perplexity."""
    return {name.replace("_", "/", 1): value for name, value in values.items()}


class JobTracking(TrainerCallback):
    """A TrainerCallback that writes each logged value to TensorBoard (and MLflow), and `finish`
    that records the final metrics and the adapter and closes the run."""

    def __init__(
        self,
        job: TrainingJobSpec,
        note: Callable[[str], None],
        mlflow_uri: str = "",
        experiment: str = DEFAULT_EXPERIMENT,
    ) -> None:
        self.job = job
        self.config = job.config
        self.note = note
        self.tensorboard_dir = Path(job.result_path).parent / TENSORBOARD_DIR
        # One event per logged step, written to a buffered file that a timer thread flushes every
        # TENSORBOARD_FLUSH_S (a live TensorBoard sees a run that often); finish() writes the rest.
        # torch's SummaryWriter cost about 5% of a tiny model's step (scalar_events.py says why).
        self.tensorboard = ScalarEventFile(self.tensorboard_dir, flush_s=TENSORBOARD_FLUSH_S)
        self.mlflow = MlflowRest(mlflow_uri) if mlflow_uri else None
        self.experiment = experiment
        self.experiment_id = ""
        self.run_id = ""
        self.artifact_uri = ""
        self.tracking_url = ""
        self.finished = False
        # Metrics waiting for the sender thread (step-indexed MLflow metric dicts).
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        self._sender_stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._start_mlflow()
        if self.run_id:
            self._sender = threading.Thread(target=self._send_every, args=(MLFLOW_SEND_S,), name="mlflow", daemon=True)
            self._sender.start()
        atexit.register(self._close_on_exit)

    @classmethod
    def from_environment(cls, job: TrainingJobSpec, note: Callable[[str], None]) -> JobTracking:
        uri = os.environ.get(MLFLOW_URI_ENV, "").strip()
        experiment = os.environ.get(MLFLOW_EXPERIMENT_ENV, "").strip() or DEFAULT_EXPERIMENT
        return cls(job, note, uri, experiment)

    # -- MLflow, best effort --------------------------------------------------------------------

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if self.mlflow is None:
            return
        try:
            action()
        except (MlflowError, KeyError, ValueError, OSError) as exc:
            self.note(f"MLflow tracking stopped ({what} failed: {exc}); training goes on")
            self.mlflow = None

    def _start_mlflow(self) -> None:
        def start() -> None:
            assert self.mlflow is not None
            self.experiment_id = self.mlflow.experiment_id(self.experiment)
            info = self.mlflow.create_run(self.experiment_id, self.config.name or self.job.job_id,
                                          lineage_tags(self.job))
            self.run_id = str(info["run_id"])
            self.artifact_uri = str(info.get("artifact_uri", ""))
            params = {k: _param_text(v) for k, v in recorded_config(self.job).items() if k != "dataset_path"}
            self.mlflow.log_batch(self.run_id, params=params)
            self.tracking_url = f"{self.mlflow.base_url}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            self.note(f"Tracking in MLflow: {self.tracking_url}")

        self._guard("starting the run", start)

    def _metrics(self, values: dict[str, float], step: int) -> None:
        """Queues values for the next send (the sender thread's, or finish's)."""
        if not self.run_id or self.mlflow is None:
            return
        stamp = _now_ms()
        with self._pending_lock:
            self._pending.extend({"key": k, "value": v, "timestamp": stamp, "step": step} for k, v in values.items())

    def _send_pending(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return

        def send() -> None:
            assert self.mlflow is not None
            self.mlflow.log_batch(self.run_id, metrics=batch)

        self._guard("logging metrics", send)

    def _send_every(self, interval_s: float) -> None:
        while not self._sender_stop.wait(interval_s):
            self._send_pending()

    # -- the callback ---------------------------------------------------------------------------

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        values = {}
        for key, raw in (logs or {}).items():
            value = finite_number(raw)
            if value is None or key in ("epoch", "total_flos"):
                continue
            values[key if key.startswith("eval_") else f"train_{key}"] = value
        if values:
            step = int(state.global_step)
            self.tensorboard.add_scalars(tensorboard_tags(values), step)
            self._metrics(values, step)

    # -- the end --------------------------------------------------------------------------------

    def finish(
        self, outcome: str, metrics: dict[str, float] | None = None, output_dir: str = "", step: int = 0
    ) -> None:
        """Final metrics (eval/<name>), the adapter, the run's status; closes the event file."""
        if self.finished:
            return
        self.finished = True
        atexit.unregister(self._close_on_exit)
        final = {f"eval_{k}" if not k.startswith("eval_") else k: v for k, v in (metrics or {}).items()
                 if finite_number(v) is not None}
        self.tensorboard.add_scalars(tensorboard_tags(final), step)
        self.tensorboard.close()
        if not self.run_id:
            return
        self._sender_stop.set()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(timeout=_REQUEST_TIMEOUT_S * 2)
        self._metrics(final, step)
        self._send_pending()  # what the sender had not sent yet, and the final metrics
        if output_dir:
            self._guard("recording the adapter", lambda: self._record_adapter(Path(output_dir)))
        status = {"completed": "FINISHED", "stopped": "KILLED"}.get(outcome, "FAILED")
        self._guard("closing the run", lambda: self.mlflow.finish(self.run_id, status) if self.mlflow else None)

    def _record_adapter(self, folder: Path) -> None:
        assert self.mlflow is not None
        tags = {"modelforge.adapter_path": str(folder.resolve())}
        if self.artifact_uri.startswith(_ARTIFACTS_PREFIX):
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                self.mlflow.upload(self.artifact_uri, path, f"adapter/{path.relative_to(folder).as_posix()}")
            tags["modelforge.adapter_artifact"] = "adapter"
        self.mlflow.log_batch(self.run_id, tags=tags)

    def details(self) -> dict[str, str]:
        """What the model's recorded config keeps: where the run's series can be seen."""
        found = {"tensorboard_dir": str(self.tensorboard_dir)}
        if self.tracking_url and self.mlflow is not None:
            found["tracking_url"] = self.tracking_url
        return found

    def _close_on_exit(self) -> None:
        # A job that raised: the run ends FAILED rather than RUNNING forever.
        if not self.finished:
            try:
                self.finish("failed")
            except Exception:  # the process is exiting anyway
                log.debug("tracking: closing on exit failed", exc_info=True)
