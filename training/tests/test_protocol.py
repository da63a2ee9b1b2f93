from __future__ import annotations

from pathlib import Path

from modelforge_training.events import describe_exception
from modelforge_training.protocol import (
    ErrorMessage,
    LogMessage,
    MetricMessage,
    Progress,
    WorkerResult,
    decode,
    encode,
)


def test_messages_round_trip() -> None:
    messages = [
        LogMessage("Loading model"),
        MetricMessage({"eval_loss": 1.5, "perplexity": 4.48}, "Evaluation finished"),
        ErrorMessage("OutOfMemoryError: CUDA out of memory"),
        Progress(step=3, total_steps=10, epoch=0.6, current_epoch=1, total_epochs=2, progress=30.0, loss=2.0),
    ]
    for message in messages:
        line = encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode(line) == message


def test_malformed_lines_are_ignored() -> None:
    for line in (b"not json", b"[1, 2]", b'{"type": "unknown"}', b'{"type": "progress", "step": "x"}'):
        assert decode(line) is None


def test_non_finite_numbers_are_dropped() -> None:
    decoded = decode(b'{"type": "metric", "metrics": {"a": 1.0, "b": "x", "c": true}, "message": ""}')
    assert decoded == MetricMessage({"a": 1.0}, "")
    progress = decode(
        b'{"type": "progress", "step": 1, "total_steps": 2, "epoch": 0.5, "current_epoch": 1, '
        b'"total_epochs": 1, "progress": 50, "loss": "nan"}'
    )
    assert isinstance(progress, Progress) and progress.loss is None


def test_result_files(tmp_path: Path) -> None:
    # The job file is the TrainingJobSpec (test_spec.py).
    assert WorkerResult.read(tmp_path / "result.json") is None
    result = WorkerResult(outcome="completed", metrics={"final_loss": 1.0}, output_dir="/o", step=4)
    result.write(tmp_path / "result.json")
    assert WorkerResult.read(tmp_path / "result.json") == result


def test_exceptions_are_described_by_their_last_line() -> None:
    assert describe_exception(ValueError("first line\n\nthe actual reason\n")) == "ValueError: the actual reason"
    assert describe_exception(MemoryError()) == "MemoryError"
