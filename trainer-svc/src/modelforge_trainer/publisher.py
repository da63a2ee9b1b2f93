"""Publishes job events to NATS JetStream without ever holding up training.

Events go into a bounded buffer and one task sends them in order. While NATS is unreachable the
buffer holds them (the oldest are dropped when it is full) and the task keeps reconnecting; job status
stays available over gRPC all along. Each message carries a Nats-Msg-Id so a publish retried after a
lost acknowledgement is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from modelforge_common.nats import EVENT_CONTENT_TYPE, ensure_training_stream, training_subject
from modelforge_trainer.jobs import JobEvent

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def publish(self, event: JobEvent) -> None:
        """Queues the event; never blocks and never raises."""
        ...


class FlushableSink(EventSink, Protocol):
    async def flush(self, timeout_s: float) -> bool:
        """Waits until every event so far is stored (True) or the timeout passes (False)."""
        ...


class RecordingSink:
    """Keeps events in memory (tests, and a trainer run without NATS)."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self._changed = asyncio.Event()

    def publish(self, event: JobEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def flush(self, timeout_s: float) -> bool:
        return True

    async def wait_until(self, predicate: Callable[[list[JobEvent]], bool]) -> None:
        """Returns once predicate(events) holds; callers bound it with asyncio.timeout."""
        while not predicate(self.events):
            self._changed.clear()
            await self._changed.wait()


Connect = Callable[[], Awaitable[Any]]


class NatsEventPublisher:
    def __init__(
        self,
        connect: Connect,
        encode: Callable[[JobEvent], bytes],
        *,
        buffer_size: int = 10_000,
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self._connect = connect
        self._encode = encode
        self._buffer: deque[JobEvent] = deque()
        self._buffer_size = buffer_size
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._failures = 0
        self._publish_timeout_s = publish_timeout_s
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None
        self._stream_ready = False
        self._dropped = 0
        self._last_warning = 0.0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def publish(self, event: JobEvent) -> None:
        if len(self._buffer) >= self._buffer_size:
            self._buffer.popleft()
            self._dropped += 1
            self._warn(f"event buffer full ({self._buffer_size}); dropped {self._dropped} oldest event(s)")
        self._buffer.append(event)
        self._drained.clear()
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nats-event-publisher")

    def _warn(self, message: str) -> None:
        # At most one warning every 10 s: an unreachable NATS must not flood the logs.
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning(message)

    async def _ensure_connected(self) -> bool:
        if self._nc is None:
            try:
                self._nc = await self._connect()
                self._failures = 0
            except Exception as exc:  # noqa: BLE001 - any failure means "retry later"
                self._warn(f"NATS unreachable, {len(self._buffer)} event(s) buffered: {exc!r}")
                return False
        if self._nc.is_closed:
            self._nc = None
            self._stream_ready = False
            return False
        if not self._nc.is_connected:
            return False
        if not self._stream_ready:
            try:
                await ensure_training_stream(self._nc)
                self._stream_ready = True
            except Exception as exc:  # noqa: BLE001
                self._warn(f"could not create the training stream, {len(self._buffer)} event(s) buffered: {exc!r}")
                return False
        return True

    async def _send(self, event: JobEvent) -> None:
        js = self._nc.jetstream()
        await js.publish(
            training_subject(event.job_id, event.kind.value),
            self._encode(event),
            timeout=self._publish_timeout_s,
            headers={"Content-Type": EVENT_CONTENT_TYPE, "Nats-Msg-Id": f"{event.job_id}:{event.seq}"},
        )

    async def _back_off(self) -> None:
        self._failures += 1
        await asyncio.sleep(min(self._max_retry_s, self._retry_s * 2 ** (self._failures - 1)))

    async def _run(self) -> None:
        # Connects (and declares the stream) right away, so subscribers find it before the first job.
        while True:
            if not await self._ensure_connected():
                await self._back_off()
                continue
            if not self._buffer:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            event = self._buffer[0]
            try:
                await self._send(event)
            except Exception as exc:  # noqa: BLE001 - keep the event and retry
                self._stream_ready = False  # the server may have lost the stream (a fresh NATS)
                self._warn(f"publishing {event.job_id}#{event.seq} failed, will retry: {exc!r}")
                await self._back_off()
                continue
            self._failures = 0
            if self._buffer and self._buffer[0] is event:
                self._buffer.popleft()

    async def flush(self, timeout_s: float) -> bool:
        """Waits until the buffer is empty (True) or the timeout passes (False)."""
        if self._buffer and self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        return not self._buffer

    async def close(self, timeout_s: float = 5.0) -> None:
        if not await self.flush(timeout_s):
            log.warning("closing with %d unpublished event(s)", len(self._buffer))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), timeout_s)
            self._nc = None
