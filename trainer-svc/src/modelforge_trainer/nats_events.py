"""The event sink of a runtime in a Kubeflow TrainJob pod: the worker protocol's lines (the same
bytes a local worker writes to its pipe) published to the job's NATS subject, which trainer-svc
follows (kubeflow.py). nats-py is asyncio; the worker is not: the connection lives on a loop in a
thread of its own, and send() hands it each line. Registered as the runtime's event sink "nats"
(entry point group modelforge_training.event_sinks in trainer-svc's pyproject), so the runtime finds
it without importing nats."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from typing import Any

from modelforge_training.events import MessageSink
from modelforge_training.protocol import WorkerMessage, encode

log = logging.getLogger(__name__)

# Set on the pod by kubeflow.py.
NATS_URL_ENV = "MODELFORGE_WORKER_NATS_URL"
SUBJECT_ENV = "MODELFORGE_WORKER_EVENTS_SUBJECT"
FLUSH_TIMEOUT_S = 10.0


class NatsEventSink(MessageSink):
    """EventSink publishing to NATS; a NATS outage drops lines (training goes on), as a closed pipe does."""

    def __init__(self, url: str, subject: str, connect_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        self.subject = subject
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-events", daemon=True)
        self._thread.start()
        self._connection: Any = None
        try:
            self._connection = self._run(self._connect(url), connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported on stderr, training goes on
            log.warning("events to NATS unavailable (%s): progress will not be reported", exc)

    @classmethod
    def from_environment(cls) -> NatsEventSink:
        return cls(os.environ.get(NATS_URL_ENV, "nats://nats:4222"), os.environ[SUBJECT_ENV])

    async def _connect(self, url: str) -> Any:
        import nats

        return await nats.connect(url, name="modelforge-worker", max_reconnect_attempts=-1, reconnect_time_wait=1)

    def _run(self, coroutine: Any, timeout_s: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    @staticmethod
    async def _cancel_pending() -> None:
        """Ends what the loop still runs (a connect given up on) before the loop stops."""
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def send(self, message: WorkerMessage) -> None:
        if self._connection is None:
            return
        data = encode(message)
        future = asyncio.run_coroutine_threadsafe(self._connection.publish(self.subject, data), self._loop)
        # Publishing buffers in the client; waiting keeps the lines in order across threads.
        # A line NATS did not take is dropped, as a closed pipe's is.
        with contextlib.suppress(concurrent.futures.TimeoutError, Exception):
            future.result(FLUSH_TIMEOUT_S)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # closing anyway
                self._run(self._connection.drain(), FLUSH_TIMEOUT_S)
            self._connection = None
        with contextlib.suppress(Exception):
            self._run(self._cancel_pending(), FLUSH_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(FLUSH_TIMEOUT_S)
