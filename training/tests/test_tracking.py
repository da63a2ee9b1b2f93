"""Experiment tracking (tracking.py): a worker process trains the tiny model with
MODELFORGE_MLFLOW_URI pointing at a real MLflow server; the run's params, series, eval metrics,
lineage tags and adapter arrive there, and the TensorBoard files beside the job's log read back
with tensorboard's own reader. A tracking server that fails does not fail the job."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from modelforge_training.spec import TrainingConfig, TrainingJobSpec
from modelforge_training.testing import job_spec, run_worker_process, worker_job
from modelforge_training.testing_mlflow import MlflowReader, mlflow_server
from modelforge_training.tracking import JobTracking

STEPS = 3


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.mark.slow
def test_a_job_is_tracked_in_mlflow_and_tensorboard(
    tiny_causal_model: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    config = job_spec(
        "text-generation", "sft", tiny_causal_model, chat_dataset, name="tracked", max_steps=STEPS, logging_steps=1,
        per_device_train_batch_size=2, max_seq_length=64, bf16=False,
    )
    job_dir = tmp_path / "job"
    with mlflow_server(tmp_path / "mlflow") as url:
        run = run_worker_process(worker_job(job_dir, config), job_dir, env={"MODELFORGE_MLFLOW_URI": url})
        assert run.returncode == 0, run.output
        assert run.result is not None and run.result.outcome == "completed"
        reader = MlflowReader(url)
        [found] = reader.runs()
        info, data = found["info"], found["data"]
        run_id = info["run_id"]
        assert info["status"] == "FINISHED" and info["run_name"] == "tracked"
        params = {p["key"]: p["value"] for p in data["params"]}
        assert params["max_steps"] == str(STEPS)
        assert params["learning_rate"] == str(config.config.learning_rate)
        assert params["model_name"] == str(tiny_causal_model)
        tags = {t["key"]: t["value"] for t in data["tags"]}
        assert tags["modelforge.job_id"] == "train_20240101_000000_test"
        assert tags["modelforge.dataset"] == "chat.jsonl"
        assert tags["modelforge.dataset_sha256"] == hashlib.sha256(chat_dataset.read_bytes()).hexdigest()
        assert tags["modelforge.adapter_artifact"] == "adapter"
        losses = reader.history(run_id, "train_loss")
        assert [step for step, _ in losses] == list(range(1, STEPS + 1))
        assert [step for step, _ in reader.history(run_id, "train_learning_rate")] == list(range(1, STEPS + 1))
        evaluated = {m["key"]: m["value"] for m in data["metrics"]}
        assert evaluated["eval_final_loss"] == pytest.approx(run.result.metrics["final_loss"])
        assert evaluated["eval_perplexity"] == pytest.approx(run.result.metrics["perplexity"])
        assert "adapter/adapter_config.json" in reader.artifacts(run_id, "adapter")
        # The model's recorded config links back to the run.
        assert run.result.config["tracking_url"] == f"{url}/#/experiments/{info['experiment_id']}/runs/{run_id}"

    # TensorBoard: beside the job's log, the same series.
    assert run.result.config["tensorboard_dir"] == str(job_dir / "tensorboard")
    series = scalars(job_dir / "tensorboard")
    assert [step for step, _ in series["train/loss"]] == list(range(1, STEPS + 1))
    assert [v for _, v in series["train/loss"]] == pytest.approx([v for _, v in losses])
    assert series["eval/perplexity"] == [(STEPS, pytest.approx(run.result.metrics["perplexity"]))]


def test_an_unreachable_tracking_server_is_noted_and_left_alone(tmp_path: Path) -> None:
    from modelforge_common.testing import free_port

    notes: list[str] = []
    config = TrainingConfig(name="n", model_name="m", task="text-generation", strategy="sft", provider="huggingface",
                            dataset="d.jsonl")
    job = TrainingJobSpec(job_id="job-x", config=config, dataset_path=str(tmp_path / "missing.jsonl"),
                          output_dir=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ck"),
                          result_path=str(tmp_path / "job" / "result.json"))
    tracking = JobTracking(job, notes.append, f"http://127.0.0.1:{free_port()}")
    assert tracking.mlflow is None and len(notes) == 1 and notes[0].startswith("MLflow tracking stopped")
    tracking.finish("completed", {"final_loss": 1.5}, step=2)
    assert tracking.details() == {"tensorboard_dir": str(tmp_path / "job" / "tensorboard")}
    assert scalars(tmp_path / "job" / "tensorboard") == {"eval/final_loss": [(2, 1.5)]}


class RecordingMlflow:
    """Stands in for MlflowRest: records what a run would have sent to the server."""

    base_url = "http://mlflow.test"

    def __init__(self, base_url: str) -> None:
        self.metric_requests: list[list[dict[str, object]]] = []
        self.finished_as = ""

    def experiment_id(self, name: str) -> str:
        return "1"

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> dict[str, str]:
        return {"run_id": "run-1", "artifact_uri": ""}

    def log_batch(self, run_id: str, metrics: list[dict[str, object]] | tuple[()] = (), **kwargs: object) -> None:
        if metrics:
            self.metric_requests.append(list(metrics))

    def finish(self, run_id: str, status: str) -> None:
        self.finished_as = status


def tracked_job(tmp_path: Path) -> TrainingJobSpec:
    config = TrainingConfig(name="n", model_name="m", task="text-generation", strategy="sft", provider="huggingface",
                            dataset="d.jsonl")
    return TrainingJobSpec(job_id="job-x", config=config, dataset_path=str(tmp_path / "missing.jsonl"),
                           output_dir=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ck"),
                           result_path=str(tmp_path / "job" / "result.json"))


def log_steps(tracking: JobTracking, steps: range) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    state = TrainerState()
    for step in steps:
        state.global_step = step
        tracking.on_log(TrainingArguments(output_dir="unused", report_to="none"), state, TrainerControl(),
                        logs={"loss": 1.0 / step, "learning_rate": 0.001, "epoch": 0.1 * step})


def test_mlflow_series_are_sent_in_batches_by_a_thread_and_the_rest_at_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelforge_training import tracking as tracking_module

    monkeypatch.setattr(tracking_module, "MlflowRest", RecordingMlflow)
    monkeypatch.setattr(tracking_module, "MLFLOW_SEND_S", 0.02)
    tracking = JobTracking(tracked_job(tmp_path), [].append, "http://mlflow.test")
    server = tracking.mlflow
    assert isinstance(server, RecordingMlflow) and tracking.run_id == "run-1"
    log_steps(tracking, range(1, 4))
    deadline = time.monotonic() + 30  # a bound on waiting, not a speed check
    while not server.metric_requests:
        assert time.monotonic() < deadline, "the sender thread never sent the queued metrics"
        time.sleep(0.02)
    log_steps(tracking, range(4, 6))
    tracking.finish("completed", {"final_loss": 0.2}, step=5)

    sent = [metric for request in server.metric_requests for metric in request]
    assert [(m["key"], m["step"]) for m in sent if m["key"] == "train_loss"] == [("train_loss", s) for s in range(1, 6)]
    assert [(m["key"], m["step"]) for m in sent if m["key"] == "train_learning_rate"] == [
        ("train_learning_rate", s) for s in range(1, 6)
    ]
    assert [(m["key"], m["value"], m["step"]) for m in sent if m["key"].startswith("eval_")] == [
        ("eval_final_loss", 0.2, 5)
    ]
    assert len(server.metric_requests) < 6  # batched: fewer requests than logged steps
    assert server.finished_as == "FINISHED"


def test_without_a_sender_thread_finish_sends_every_queued_metric_in_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelforge_training import tracking as tracking_module

    monkeypatch.setattr(tracking_module, "MlflowRest", RecordingMlflow)
    monkeypatch.setattr(tracking_module, "MLFLOW_SEND_S", 3600.0)  # the thread never wakes in this test
    tracking = JobTracking(tracked_job(tmp_path), [].append, "http://mlflow.test")
    server = tracking.mlflow
    assert isinstance(server, RecordingMlflow)
    log_steps(tracking, range(1, 11))
    assert server.metric_requests == []  # queued, not sent from the training loop
    tracking.finish("stopped", step=10)
    [request] = server.metric_requests
    assert sorted({(m["key"], m["step"]) for m in request}) == sorted(
        {(key, step) for key in ("train_loss", "train_learning_rate") for step in range(1, 11)}
    )
    assert server.finished_as == "KILLED"
