"""The job spec (spec.py): what trainer-svc writes is what the runtime reads, and a bad file is refused
when read, naming what is wrong, before anything heavy is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelforge_training.protocol import EXIT_BAD_JOB
from modelforge_training.spec import (
    BadSpec,
    TrainingConfig,
    TrainingJobSpec,
    apply_recorded,
    distributed_mode,
    parse_spec,
    read_spec,
    recorded_config,
    world_size,
    write_spec,
)


def spec(**config: object) -> TrainingJobSpec:
    return TrainingJobSpec(
        job_id="train_x",
        config=TrainingConfig(
            task="text-generation", model_name="/models/tiny", provider="huggingface", strategy="sft",
            dataset="chat.jsonl", learning_rate=2e-4, lora_r=16, bf16=False, **config,  # type: ignore[arg-type]
        ),
        dataset_path="/data/chat.jsonl",
        output_dir="/o",
        checkpoint_dir="/c",
        result_path="/r/result.json",
    )


def test_a_written_spec_reads_back_the_same(tmp_path: Path) -> None:
    written = spec(weight_decay=0.01, dpo_beta=0.2)
    write_spec(written, tmp_path / "job.json")
    assert read_spec(tmp_path / "job.json") == written
    assert json.loads((tmp_path / "job.json").read_text())["config"]["weight_decay"] == 0.01


def test_unknown_fields_bad_types_missing_values_and_bounds_are_refused() -> None:
    good = json.loads(json.dumps({"job_id": "j", "dataset_path": "/d", "output_dir": "/o", "checkpoint_dir": "/c",
                                  "result_path": "/r", "config": {"task": "t", "model_name": "m", "provider": "p",
                                                                  "strategy": "s"}}))
    assert parse_spec(json.dumps(good)).job_id == "j"
    with pytest.raises(BadSpec, match="learning_rat"):
        parse_spec(json.dumps({**good, "config": {**good["config"], "learning_rat": 0.1}}))
    with pytest.raises(BadSpec, match="lora_r"):
        parse_spec(json.dumps({**good, "config": {**good["config"], "lora_r": "sixteen"}}))
    with pytest.raises(BadSpec, match=r"output_dir is required; config\.model_name is required"):
        parse_spec(json.dumps({**good, "output_dir": "", "config": {**good["config"], "model_name": ""}}))
    with pytest.raises(BadSpec, match=r"config\.weight_decay must be >= 0 and <= 1, got 2"):
        parse_spec(json.dumps({**good, "config": {**good["config"], "weight_decay": 2.0}}))
    with pytest.raises(BadSpec, match=r"config\.distributed must be one of"):
        parse_spec(json.dumps({**good, "config": {**good["config"], "distributed": "zero3"}}))


def test_the_runtime_refuses_a_bad_job_file_with_a_clear_message(tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"job_id": "j", "confg": {}}))
    read_fd, write_fd = os.pipe()
    done = subprocess.run(
        [sys.executable, "-m", "modelforge_training", str(job_file), "--events-fd", str(write_fd)],
        pass_fds=(write_fd,), capture_output=True, text=True, timeout=120,
    )
    os.close(write_fd)
    with open(read_fd, "rb") as events:
        sent = events.read().decode()
    assert done.returncode == EXIT_BAD_JOB
    assert "confg" in done.stderr and "cannot be used" in done.stderr
    assert '"type": "error"' in sent and "confg" in sent
    # Refused before the training stack is imported (a bad file costs no torch import).
    assert "Traceback" not in done.stderr


def test_world_size_and_mode() -> None:
    assert (world_size(TrainingConfig()), distributed_mode(TrainingConfig())) == (1, "")
    assert distributed_mode(TrainingConfig(processes_per_node=2)) == "ddp"
    assert distributed_mode(TrainingConfig(distributed="fsdp")) == "fsdp"
    assert world_size(TrainingConfig(processes_per_node=4, num_nodes=2)) == 8


def test_recorded_config_round_trips() -> None:
    original = spec(name="", eval_dataset="")
    recorded = recorded_config(original)
    assert recorded["lora_r"] == 16 and recorded["dataset_path"] == "/data/chat.jsonl" and recorded["name"] == ""
    assert "force" not in recorded and "dpo_beta" not in recorded  # unset stays unset
    back = TrainingJobSpec()
    apply_recorded(back, {**recorded, "device": "cpu", "bf16": True})
    assert back.config.lora_r == 16 and back.config.bf16 and back.dataset_path == "/data/chat.jsonl"


def test_an_unknown_event_sink_is_refused_by_name() -> None:
    from modelforge_training.events import registered_sink

    with pytest.raises(ValueError, match="unknown event sink 'carrier-pigeon'"):
        registered_sink("carrier-pigeon")
