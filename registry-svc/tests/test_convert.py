"""Protobuf <-> domain conversions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from modelforge_registry import convert
from modelforge_registry.domain import ModelInfo


def test_a_model_round_trips_through_protobuf() -> None:
    created = datetime(2024, 3, 15, 14, 30, 22, 123000, tzinfo=UTC)
    info = ModelInfo(
        id=7, model_id="model_20240315_143022_ab12", name="n", base_model="org/b", task="summarization",
        strategy="sft", provider="huggingface", created_at=created, size_mb=1.5, path=Path("/d/models/x"),
        config={"lora_r": 8.0, "nested": {"a": [1.0, "x"]}}, training_params={"num_epochs": 3.0},
        metrics={"final_loss": 0.25}, job_id="train_1", adapter_type="lora", file_sha256={"a": "ff"})
    message = convert.model_pb(info)
    assert message.created_at.ToDatetime(tzinfo=UTC) == created
    assert message.path == "/d/models/x"
    new = convert.new_model_of(message)
    assert (new.config, new.training_params, new.metrics, new.file_sha256) == (
        info.config, info.training_params, info.metrics, info.file_sha256)
