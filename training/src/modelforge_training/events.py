"""How a worker talks to the service: JSON lines on the events pipe, and a stop flag set by SIGTERM."""

from __future__ import annotations

import contextlib
import math
import os
import threading

from modelforge_trainer.jobs import Progress
from modelforge_trainer.worker.protocol import ErrorMessage, LogMessage, MetricMessage, WorkerMessage, encode


class StopFlag:
    """Set from the SIGTERM handler; the training callback stops at the next step when it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class EventWriter:
    """Writes messages to the events pipe. A service gone away must not crash training: writes that fail
    are dropped (the worker then stops with its parent)."""

    def __init__(self, fd: int | None) -> None:
        # None: a rank other than 0 of a distributed job, whose messages nobody reads.
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def send(self, message: WorkerMessage) -> None:
        data = encode(message)
        with self._lock:
            if self._fd is None:
                return
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError:
                self._fd = None

    def log(self, message: str) -> None:
        self.send(LogMessage(message))

    def metrics(self, metrics: dict[str, float], message: str) -> None:
        self.send(MetricMessage({k: v for k, v in metrics.items() if math.isfinite(v)}, message))

    def progress(self, progress: Progress) -> None:
        self.send(progress)

    def error(self, message: str) -> None:
        self.send(ErrorMessage(message))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


def describe_exception(exc: BaseException) -> str:
    """ "<Type>: <last line of the message>": what a client sees of a failed job, without a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
