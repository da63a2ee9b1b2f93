"""NATS connection and the training-event subjects / JetStream stream."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

log = logging.getLogger(__name__)

TRAINING_STREAM = "TRAINING"
TRAINING_SUBJECT_PREFIX = "modelforge.training"
EVENT_CONTENT_TYPE = "application/x-protobuf; messageType=modelforge.v1.TrainingEvent"


def training_subject(job_id: str, kind: str) -> str:
    """modelforge.training.<job_id>.<kind>; kind is status | progress | metric | log."""
    return f"{TRAINING_SUBJECT_PREFIX}.{job_id}.{kind}"


def training_wildcard(job_id: str = "*") -> str:
    return f"{TRAINING_SUBJECT_PREFIX}.{job_id}.*"


async def connect(url: str, name: str, *, max_reconnect_attempts: int = -1) -> Client:
    """Connects with bounded reconnect backoff; retries the first connect too."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        url,
        name=name,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=max_reconnect_attempts,
        allow_reconnect=True,
        connect_timeout=2,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_training_stream(nc: Client) -> None:
    """Creates (or keeps) the stream that captures every training event for replay."""
    js = nc.jetstream()
    config = StreamConfig(
        name=TRAINING_STREAM,
        subjects=[f"{TRAINING_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600,
    )
    try:
        await js.add_stream(config)
    except Exception:  # noqa: BLE001 - exists with another config: update it
        await js.update_stream(config)
