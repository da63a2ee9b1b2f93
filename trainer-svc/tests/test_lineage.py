"""lineage.py: the loss curve, the base model and dataset digests, and the Lineage JSON the registry
receives (checked by parsing it into the proto message, as convert.model_to_pb does)."""

from __future__ import annotations

import hashlib
import importlib.metadata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from modelforge.v1 import registry_pb2
from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.convert import model_to_pb
from modelforge_trainer.lineage import LossCurve, base_model_lineage, build_lineage, installed_versions
from modelforge_trainer.ports import ModelRecord
from modelforge_training.protocol import Progress
from modelforge_training.spec import TrainingJobSpec, recorded_config

QUEUED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def progress(step: int, loss: float | None, learning_rate: float | None = None) -> Progress:
    return Progress(
        step=step,
        total_steps=4,
        epoch=step / 2,
        current_epoch=1,
        total_epochs=2,
        progress=25.0 * step,
        loss=loss,
        learning_rate=learning_rate,
    )


def test_loss_curve_keeps_reports_with_a_loss_in_step_order() -> None:
    curve = LossCurve()
    for report in (progress(2, 1.5, 1e-4), progress(1, 2.0, 2e-4), progress(3, None), progress(2, 1.4)):
        curve.add(report)
    assert curve.as_list() == [
        {"step": 1, "loss": 2.0, "epoch": 0.5, "learning_rate": 2e-4},
        {"step": 2, "loss": 1.4, "epoch": 1.0},
    ]


def local_config(tmp_path: Path, dataset: bytes) -> tuple[TrainingJobSpec, Path]:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    data = tmp_path / "train.jsonl"
    data.write_bytes(dataset)
    request = TrainingConfig(task="text-generation", model_name=str(base), dataset="train.jsonl", seed=7)
    config = resolve(request, Hyperparameters(), model_name=str(base), local_model=True, dataset_path=str(data))
    return config, base


def test_build_lineage_records_every_part(tmp_path: Path) -> None:
    rows = b'{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": "d"}\n' * 3
    config, base = local_config(tmp_path, rows)
    used = {**recorded_config(config), "device": "cpu", "train_examples": 5, "eval_examples": 1, "bf16": False}
    curve = LossCurve()
    curve.add(progress(1, 2.5, 1e-4))
    started, finished = QUEUED + timedelta(seconds=3), QUEUED + timedelta(seconds=13.5)

    lineage = build_lineage(
        job_id="train_x",
        spec=config,
        used=used,
        metrics={"final_loss": 2.5},
        loss_curve=curve,
        queued_at=QUEUED,
        started_at=started,
        finished_at=finished,
        owner="alice",
    )

    assert lineage["base_model"] == {
        "name": str(base),
        "local": True,
        "revision": "",
        "config_sha256": hashlib.sha256(b'{"model_type": "llama"}').hexdigest(),
    }
    assert lineage["dataset"] == {
        "filename": "train.jsonl",
        "path": str(tmp_path / "train.jsonl"),
        "sha256": hashlib.sha256(rows).hexdigest(),
        "num_rows": 6,
        "train_rows": 5,
        "eval_rows": 1,
        "eval_split": 0.1,
        "seed": 7,
    }
    assert lineage["config"] == used
    assert (lineage["task"], lineage["strategy"], lineage["provider"]) == ("text-generation", "sft", "huggingface")
    assert lineage["environment"]["device"] == "cpu"
    assert lineage["environment"]["versions"] == {
        name: importlib.metadata.version(name) for name in ("torch", "transformers", "peft", "trl", "datasets")
    }
    assert lineage["job"] == {
        "job_id": "train_x",
        "queued_at": "2026-11-24T12:00:00Z",
        "started_at": "2026-11-24T12:00:03Z",
        "finished_at": "2026-11-24T12:00:13.500000Z",
        "duration_s": 10.5,
        "status": "completed",
        "owner": "alice",
    }
    assert lineage["metrics"] == {"final_loss": 2.5}
    assert lineage["loss_curve"] == curve.as_list()

    # The registry gets it as the Lineage message, losslessly.
    record = ModelRecord(
        name="m",
        base_model=str(base),
        task="text-generation",
        strategy="sft",
        provider="huggingface",
        path="/x",
        config=used,
        training_params={},
        metrics={},
        job_id="train_x",
        lineage=lineage,
    )
    message = model_to_pb(record).lineage
    assert message.dataset.seed == 7 and message.loss_curve[0].step == 1
    assert message.job.started_at.ToDatetime(tzinfo=UTC) == started
    assert json_format.MessageToDict(message, preserving_proto_field_name=True)["dataset"]["sha256"] == (
        hashlib.sha256(rows).hexdigest()
    )
    assert not model_to_pb(record.__class__(**{**record.__dict__, "lineage": None})).HasField("lineage")


def test_a_dataset_gone_before_the_end_still_gives_a_lineage(tmp_path: Path) -> None:
    config, _ = local_config(tmp_path, b"{}\n")
    (tmp_path / "train.jsonl").unlink()
    lineage = build_lineage(
        job_id="j",
        spec=config,
        used={},
        metrics={},
        loss_curve=LossCurve(),
        queued_at=QUEUED,
        started_at=None,
        finished_at=QUEUED + timedelta(seconds=1),
    )
    assert (lineage["dataset"]["sha256"], lineage["dataset"]["num_rows"]) == ("", 0)
    assert "started_at" not in lineage["job"] and lineage["job"]["duration_s"] == 1.0
    json_format.ParseDict(lineage, registry_pb2.Lineage())


def test_a_hub_model_records_the_cached_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub cache layout: models--org--name/refs/main names the snapshot folder (the commit)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    request = TrainingConfig(task="text-generation", model_name="org/tiny", dataset="d.jsonl")
    config = resolve(request, Hyperparameters(), model_name="org/tiny", local_model=False, dataset_path="/d")
    assert base_model_lineage(config) == {
        "name": "org/tiny",
        "local": False,
        "revision": commit,
        "config_sha256": hashlib.sha256(b"{}").hexdigest(),
    }
    uncached = resolve(request, Hyperparameters(), model_name="org/other", local_model=False, dataset_path="/d")
    assert base_model_lineage(uncached)["revision"] == ""


def test_unsloth_runs_record_its_version_too() -> None:
    assert set(installed_versions("unsloth")) == {"torch", "transformers", "peft", "trl", "datasets", "unsloth"}
    assert "unsloth" not in installed_versions("huggingface")


def test_the_runs_tracking_locations_are_no_setting_of_the_lineage(tmp_path: Path) -> None:
    # A reproduced run writes its series elsewhere; its lineage config must still equal the first's.
    config, _ = local_config(tmp_path, b'{"prompt": "a", "completion": "b"}\n' * 3)
    used = {**recorded_config(config), "device": "cpu", "tensorboard_dir": "/d/jobs/x/tensorboard",
            "tracking_url": "http://mlflow/#/experiments/1/runs/2"}
    lineage = build_lineage(
        job_id="train_x", spec=config, used=used, metrics={}, loss_curve=LossCurve(),
        queued_at=QUEUED, started_at=None, finished_at=QUEUED,
    )
    assert "tensorboard_dir" not in lineage["config"] and "tracking_url" not in lineage["config"]
    assert lineage["config"]["device"] == "cpu"
