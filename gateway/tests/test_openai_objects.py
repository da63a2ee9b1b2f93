"""Platform messages as OpenAI objects: what is derived, and how pages end."""

from __future__ import annotations

from typing import Any

import pytest

from modelforge.v1 import common_pb2
from modelforge_gateway.openai import objects
from modelforge_gateway.openai.responses import FileObject


def test_job_statuses_map_onto_openais_words() -> None:
    words = {status: objects.job_status(common_pb2.TrainingJob(status=status)) for status in objects.JOB_STATUS}
    assert sorted(words.values()) == ["cancelled", "failed", "queued", "running", "succeeded"]
    # A status added later (the model being registered) is still work in progress.
    assert objects.job_status(common_pb2.TrainingJob(status=common_pb2.JOB_STATUS_REGISTERING)) == "running"


def test_hyperparameters_report_auto_only_when_unset() -> None:
    unset = common_pb2.TrainingConfig(strategy="sft")
    names = ("n_epochs", "batch_size", "learning_rate_multiplier")
    assert objects.hyperparameters(unset).model_dump() == dict.fromkeys(names, "auto")
    resolved = common_pb2.TrainingConfig(
        strategy="dpo", num_train_epochs=3, per_device_train_batch_size=8, learning_rate=1e-4, dpo_beta=0.3
    )
    method = objects.method(resolved).model_dump()
    assert method["type"] == "dpo" and set(method) == {"type", "dpo"}
    assert method["dpo"]["hyperparameters"] == {
        "n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5, "beta": pytest.approx(0.3)}


@pytest.mark.parametrize(
    ("base", "suffix", "name"),
    [("/models/tiny-llama/", "fox", "tiny-llama:ft-fox:0a1b2c3d"), ("org/Llama-3", None, "Llama-3:ft:0a1b2c3d")],
)
def test_the_suffix_lives_in_the_model_name(base: str, suffix: str | None, name: str) -> None:
    assert objects.model_name_for(base, suffix, "0a1b2c3d") == name
    assert objects.suffix_of(name) == suffix
    assert objects.suffix_of("tiny-llama-sft") is None


def test_file_ids_of_job_datasets() -> None:
    assert objects.file_id_of("file-0123456789abcdef01234567.chat.jsonl") == "file-0123456789abcdef01234567"
    assert objects.file_id_of("/data/datasets/file-0123456789abcdef01234567.chat.jsonl").startswith("file-0123")
    assert objects.file_id_of("uploaded-through-api.jsonl") == "uploaded-through-api.jsonl"


def event(**fields: Any) -> dict[str, Any]:
    base = {"job_id": "job_1", "seq": 4, "timestamp": "2024-03-15T14:30:22.500Z", "message": "", "error": None,
            "loss": None, "learning_rate": None, "metrics": {}, "status": None}
    return base | fields


def test_training_events_become_job_events() -> None:
    progress = objects.event_object(event(type="progress", current_step=3, total_steps=9, loss=1.25))
    assert progress.model_dump() == {
        "id": "ftevent-job_1-4", "object": "fine_tuning.job.event", "created_at": 1710513022, "level": "info",
        "message": "Step 3/9: training loss=1.2500", "data": {"step": 3, "total_steps": 9, "train_loss": 1.25},
        "type": "metrics",
    }
    failed = objects.event_object(event(type="status", status="error", error="CUDA out of memory"))
    assert (failed.level, failed.message, failed.type) == ("error", "CUDA out of memory", "message")
    log = objects.event_object(event(type="log", message="Loading the model"))
    assert (log.message, log.data, log.type) == ("Loading the model", {}, "message")
    assert objects.event_seq("ftevent-job_1-4", "job_1") == 4
    assert objects.event_seq("ftevent-job_2-4", "job_1") is None


def test_pages_follow_after_and_always_end() -> None:
    files = [FileObject(id=f"x{i}", bytes=1, created_at=0, filename="a.jsonl") for i in range(5)]
    first, more = objects.page(files, None, 2)
    assert [i.id for i in first] == ["x0", "x1"] and more is True
    last, more = objects.page(files, "x2", 2)
    assert [i.id for i in last] == ["x3", "x4"] and more is False
    assert objects.page(files, "gone", 2) == ([], False)


def test_objects_serialise_with_every_key_and_nulls_kept() -> None:
    """The JSON bodies keep OpenAI's null fields and key order (the SDK reads absent and null alike,
    other clients may not)."""
    job = objects.job_object(common_pb2.TrainingJob(job_id="job_1", config=common_pb2.TrainingConfig(strategy="sft")))
    body = job.model_dump(mode="json")
    assert list(body)[:4] == ["id", "object", "created_at", "error"]
    assert body["error"] is None and body["estimated_finish"] is None and body["metadata"] is None
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": body["hyperparameters"]}}
    file = FileObject(id="file-1", bytes=3, created_at=5, filename="a.jsonl").model_dump(mode="json")
    assert file == {"id": "file-1", "object": "file", "bytes": 3, "created_at": 5, "filename": "a.jsonl",
                    "purpose": "fine-tune", "status": "processed", "status_details": None, "expires_at": None}
