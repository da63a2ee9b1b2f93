"""What the supervisor and a runtime process exchange besides the job spec (spec.py): the JSON lines the
runtime writes to its events pipe, and the result file it leaves behind. Plain Python on both sides."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One progress report of the worker."""

    step: int
    total_steps: int
    epoch: float
    current_epoch: int
    total_epochs: int
    progress: float
    loss: float | None = None
    learning_rate: float | None = None
    # CUDA memory the worker's torch holds (reserved), when it trains on a GPU.
    gpu_memory_bytes: int | None = None


# Exit code of a worker that stopped on request after saving a checkpoint.
EXIT_OK = 0
EXIT_FAILED = 1
# Exit code of a runtime given a job file it cannot read or that holds bad values.
EXIT_BAD_JOB = 2


@dataclass
class WorkerResult:
    """What a worker that ended on its own terms reports (result.json)."""

    outcome: str  # completed | stopped
    config: dict[str, Any] = field(default_factory=dict)  # the configuration actually used
    metrics: dict[str, float] = field(default_factory=dict)
    output_dir: str = ""
    checkpoint: str = ""
    step: int = 0

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> WorkerResult | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


# Messages on the events pipe, one JSON object per line, told apart by "type".
@dataclass(frozen=True)
class LogMessage:
    message: str


@dataclass(frozen=True)
class MetricMessage:
    metrics: dict[str, float]
    message: str


@dataclass(frozen=True)
class ErrorMessage:
    message: str


WorkerMessage = LogMessage | MetricMessage | ErrorMessage | Progress


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bytes(value: Any) -> int | None:
    number = _finite(value)
    return int(number) if number is not None and number >= 0 else None


def encode(message: WorkerMessage) -> bytes:
    if isinstance(message, Progress):
        # vars, not asdict: every field is a plain number, and asdict's deep copy was most of the cost
        # of a progress line (a line per optimizer step).
        body: dict[str, Any] = {"type": "progress", **vars(message)}
    elif isinstance(message, LogMessage):
        body = {"type": "log", "message": message.message}
    elif isinstance(message, MetricMessage):
        body = {"type": "metric", "metrics": message.metrics, "message": message.message}
    else:
        body = {"type": "error", "message": message.message}
    return (json.dumps(body, allow_nan=False, default=str) + "\n").encode("utf-8")


def decode(line: bytes | str) -> WorkerMessage | None:
    """The message on one line; None for anything malformed (a worker bug must not break the service)."""
    try:
        body = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    kind = body.get("type")
    if kind == "log":
        return LogMessage(str(body.get("message", "")))
    if kind == "error":
        return ErrorMessage(str(body.get("message", "")))
    if kind == "metric":
        raw = body.get("metrics")
        metrics = {str(k): v for k, v in (raw.items() if isinstance(raw, dict) else []) if _finite(v) is not None}
        return MetricMessage({k: float(v) for k, v in metrics.items()}, str(body.get("message", "")))
    if kind == "progress":
        try:
            return Progress(
                step=int(body["step"]),
                total_steps=int(body["total_steps"]),
                epoch=float(body["epoch"]),
                current_epoch=int(body["current_epoch"]),
                total_epochs=int(body["total_epochs"]),
                progress=float(body["progress"]),
                loss=_finite(body.get("loss")),
                learning_rate=_finite(body.get("learning_rate")),
                gpu_memory_bytes=_bytes(body.get("gpu_memory_bytes")),
            )
        except (KeyError, TypeError, ValueError):
            return None
    return None
