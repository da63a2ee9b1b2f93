"""Replayable job progress: the stored events of a job from the TRAINING stream, and one generator
that the WebSocket and the SSE endpoint share: the current status, then every stored event after
`since`, then live ones, each seq at most once.

The caller subscribes to the hub *before* it asks for the status and reads the history, so an event
published meanwhile is both in the history and in the live queue: the generator drops the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from modelforge.v1 import events_pb2
from modelforge_common.nats import TRAINING_STREAM, training_wildcard
from modelforge_gateway.common.job_records import event_fields
from modelforge_gateway.common.protoconv import now_iso
from modelforge_gateway.eventhub import Subscriber

Event = dict[str, Any]

# A job id is one NATS subject token: no dots, spaces or wildcards.
JOB_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
TERMINAL = frozenset({"completed", "error", "stopped"})


class HistoryUnavailable(Exception):
    """NATS (or its JetStream) cannot be read right now."""


async def read_history(nc: Client | None, job_id: str, since: int = 0, timeout_s: float = 5.0) -> list[Event]:
    """The job's stored events with seq > since, in seq order, one per seq."""
    if nc is None or not nc.is_connected:
        raise HistoryUnavailable("the event store (NATS) is not connected")
    subject = training_wildcard(job_id)
    js = nc.jetstream()
    try:
        async with asyncio.timeout(timeout_s):
            info = await js.stream_info(TRAINING_STREAM, subjects_filter=subject)
            stored = sum((info.state.subjects or {}).values())
            by_seq: dict[int, Event] = {}
            if stored:
                sub = await js.subscribe(
                    subject, stream=TRAINING_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                )
                try:
                    # Count what was stored when asked; later events reach the caller live.
                    for _ in range(stored):
                        msg = await sub.next_msg(timeout=timeout_s)
                        try:
                            event: Event = dict(event_fields(events_pb2.TrainingEvent.FromString(msg.data)))
                        except DecodeError:
                            continue
                        if event["seq"] > since:
                            by_seq.setdefault(event["seq"], event)
                finally:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
    except nats.js.errors.NotFoundError:
        return []  # no stream yet: nothing was ever published
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise HistoryUnavailable(f"reading the stored events failed: {exc!r}") from exc
    return [by_seq[seq] for seq in sorted(by_seq)]


async def replay_then_follow(
    subscriber: Subscriber,
    initial: Event,
    history: list[Event],
    heartbeat_s: float,
    *,
    stop_after_terminal: bool = False,
    since: int | None = None,
) -> AsyncIterator[Event]:
    """Yields the initial status, the history, then live events of the subscriber's queue (and a
    heartbeat when idle) until the hub stops the subscriber; see subscriber.dropped for why.
    With `since`, only what was actually sent counts as sent: the initial status may be ahead of
    the stored history (events still on their way to NATS), and those must still arrive live."""
    yield initial
    job_id = initial.get("job_id") or ""
    sent = int(initial.get("seq") or 0) if since is None else since
    finished = initial.get("status") in TERMINAL
    for event in history:
        yield event
        sent = max(sent, int(event["seq"]))
    if stop_after_terminal and finished:
        return
    while True:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps every get in a new task (Python 3.11),
            # one per event per socket.
            async with asyncio.timeout(heartbeat_s):
                live = await subscriber.queue.get()
        except TimeoutError:
            yield {"type": "heartbeat", "timestamp": now_iso()}
            continue
        if live is None:
            return
        if job_id and live.get("job_id") == job_id:
            seq = int(live.get("seq") or 0)
            if 0 < seq <= sent:
                continue  # already part of the initial status or of the history
            sent = max(sent, seq)
        yield live
        if stop_after_terminal and live.get("type") == "status" and live.get("status") in TERMINAL:
            return
