"""Where a job's events go. The runtime writes to an EventSink it is given: the pipe of JSON lines the
local supervisor reads (built in), or a sink another package registers under the entry point group
`modelforge_training.event_sinks` (trainer-svc registers "nats" for Kubeflow pods), so the runtime
never imports what a sink is written with."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from modelforge_training.protocol import ErrorMessage, LogMessage, MetricMessage, Progress, WorkerMessage, encode

EVENT_SINK_GROUP = "modelforge_training.event_sinks"
PIPE_SINK = "pipe"


class StopFlag:
    """Set from the SIGTERM handler; the training callback stops at the next step when it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@runtime_checkable
class EventSink(Protocol):
    """What every layer of the runtime reports through."""

    def send(self, message: WorkerMessage) -> None: ...

    def log(self, message: str) -> None: ...

    def metrics(self, metrics: dict[str, float], message: str) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def error(self, message: str) -> None: ...

    def close(self) -> None: ...


class MessageSink(ABC):
    """The typed helpers of an EventSink over its one `send`; a sink subclasses it and writes `send`."""

    @abstractmethod
    def send(self, message: WorkerMessage) -> None:
        """Delivers one message (the pipe's JSON line, a NATS publish)."""

    def log(self, message: str) -> None:
        self.send(LogMessage(message))

    def metrics(self, metrics: dict[str, float], message: str) -> None:
        self.send(MetricMessage({k: v for k, v in metrics.items() if math.isfinite(v)}, message))

    def progress(self, progress: Progress) -> None:
        self.send(progress)

    def error(self, message: str) -> None:
        self.send(ErrorMessage(message))

    def close(self) -> None:
        return None


class PipeEventSink(MessageSink):
    """Writes JSON lines to the events pipe. A service gone away must not crash training: writes that
    fail are dropped (the worker then stops with its parent)."""

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

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


def registered_sink(name: str) -> EventSink:
    """The sink registered under `name` in the entry point group, built from its factory (which reads
    what it needs from the environment). ValueError naming the known sinks when none is."""
    found = entry_points(group=EVENT_SINK_GROUP).select(name=name)
    for point in found:
        sink = point.load()()
        if not isinstance(sink, EventSink):
            raise TypeError(f"event sink {name!r} ({point.value}) does not implement EventSink")
        return sink
    known = sorted({point.name for point in entry_points(group=EVENT_SINK_GROUP)} | {PIPE_SINK})
    raise ValueError(f"unknown event sink {name!r} (known: {', '.join(known)})")


def describe_exception(exc: BaseException) -> str:
    """ "<Type>: <last line of the message>": what a client sees of a failed job, without a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
