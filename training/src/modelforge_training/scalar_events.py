"""A TensorBoard event file of scalars, written in the format tensorboard's reader reads (TFRecord
framing of `Event` protos), one event per logged step holding all of that step's values.

Why not torch's SummaryWriter: it hands every scalar to its own thread, which opens, appends to and
closes the event file once per scalar. With the six values a trl step logs, that thread woke six
times a step and took the GIL from the training loop each time: about 0.3 ms of CPU and 0.6 ms of
wall time per step, 5% of the tiny model's step in the training benchmark (bench/ANALYSIS.md). Here
a step's values become one event, written to a buffered file by the caller; a timer thread flushes
the file every `flush_s` (a live TensorBoard sees the run that often) and close() writes the rest.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# tensorboard ships no type information: its protos and record framing are Any here.
from tensorboard.compat.proto.event_pb2 import Event  # type: ignore[import-untyped]
from tensorboard.compat.proto.summary_pb2 import Summary  # type: ignore[import-untyped]
from tensorboard.summary.writer.record_writer import RecordWriter  # type: ignore[import-untyped]

# The version tag tensorboard's reader expects in an event file's first record.
FILE_VERSION = "brain.Event:2"


class ScalarEventFile:
    """Appends scalar events to a new event file in `folder` (named as TensorBoard's writers name them)."""

    def __init__(self, folder: Path, flush_s: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        self.path = folder / f"events.out.tfevents.{int(started):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self._file = self.path.open("wb")
        # tensorboard's own TFRecord framing (length, CRCs) over the buffered file.
        self._records = RecordWriter(self._file)
        self._lock = threading.Lock()  # the training thread writes, the timer thread flushes
        self._closed = threading.Event()
        self._write(Event(wall_time=started, file_version=FILE_VERSION))
        self.flush()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_s,), name="tensorboard-flush", daemon=True
        )
        self._flusher.start()

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """One event at `step` holding every tag -> value of `values` (nothing for an empty mapping)."""
        if not values:
            return
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event: Any) -> None:
        data = event.SerializeToString()
        with self._lock:
            if not self._file.closed:
                self._records.write(data)

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def _flush_every(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            self.flush()

    def close(self) -> None:
        """Writes what is buffered and closes the file; later events are dropped."""
        self._closed.set()
        with self._lock:
            if not self._file.closed:
                self._file.close()
        if self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
