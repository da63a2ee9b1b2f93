"""Client channels with keepalive and retries on UNAVAILABLE for idempotent reads, plus
decoding of the field violations servers attach to errors.

Every channel's calls carry the current request id (x-request-id), the trace context and a timeout no
later than the deadline of the call being served (modelforge_common.tracing.client_interceptors)."""

from __future__ import annotations

import json

import grpc
from google.rpc import error_details_pb2, status_pb2

from modelforge_common.errors import FieldViolation
from modelforge_common.tracing import client_interceptors

_RETRY_METHODS = [
    {"service": "modelforge.v1.RegistryService", "method": m}
    for m in ("GetModel", "ListModels", "ListDatasets", "GetDataset", "GetSession")
] + [
    {"service": "modelforge.v1.TrainerService", "method": m}
    for m in ("GetTrainingStatus", "ListTrainingJobs")
] + [
    {"service": "modelforge.v1.HardwareService", "method": m}
    for m in ("GetHardware", "GetRecommendations", "EstimateMemory")
]

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": _RETRY_METHODS,
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def make_channel(
    target: str, max_message_bytes: int = 64 * 1024 * 1024, *, intercepted: bool = True
) -> grpc.aio.Channel:
    """A channel to `target`. intercepted=False leaves out the per-call interceptors (request id, trace,
    deadline): for a long-lived call that carries those per message instead (GenerateStreams)."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
        interceptors=client_interceptors() if intercepted else None,
    )


def violations_of(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    """Field violations a server attached (google.rpc.BadRequest in grpc-status-details-bin)."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        found: list[FieldViolation] = []
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        return found
    return []
