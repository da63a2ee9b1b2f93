"""Job status words as the public API writes them."""

from __future__ import annotations

from modelforge.v1 import common_pb2

STATUS_WORDS: dict[int, str] = {
    common_pb2.JOB_STATUS_UNSPECIFIED: "idle",
    common_pb2.JOB_STATUS_QUEUED: "queued",
    common_pb2.JOB_STATUS_RUNNING: "running",
    common_pb2.JOB_STATUS_COMPLETED: "completed",
    common_pb2.JOB_STATUS_ERROR: "error",
    common_pb2.JOB_STATUS_STOPPED: "stopped",
    common_pb2.JOB_STATUS_REGISTERING: "registering",
}
TERMINAL_STATUSES = frozenset(
    {common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_ERROR, common_pb2.JOB_STATUS_STOPPED}
)


def status_word(status: int) -> str:
    return STATUS_WORDS.get(status, "idle")
