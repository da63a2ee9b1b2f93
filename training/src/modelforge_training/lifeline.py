"""Keeps a training worker from outliving the trainer-svc that started it.

Three guards, because each alone has a hole:
- PR_SET_PDEATHSIG asks the kernel to signal the worker when its parent dies. It is lost when the
  parent died before prctl ran (the race a kill -9 right after a start hits), and a worker stuck in a
  long native call handles the signal late, or never when a handler only sets a stop flag.
- A watchdog thread compares os.getppid() with the trainer's pid and polls the events pipe: a
  changed parent or a pipe with no reader left means the trainer is gone, whatever signals did.
- The trainer passes its pid and start time in the environment (PARENT_ENV), and tags the worker
  with its data dir (DATA_DIR_ENV): a new trainer finds and ends workers of a dead one (orphans.py).

A worker whose trainer is gone ends at once (its process group with it): the job is redelivered and
resumes from its last finished checkpoint, so nothing is gained by training on, and a GPU it holds is
wanted by the next job.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import NoReturn

PR_SET_PDEATHSIG = 1
# Set by launch.py for the ranks it starts: the launcher's pid (distributed.py).
LAUNCHER_ENV = "MODELFORGE_WORKER_LAUNCHER"
# "<pid>:<start time>" of the trainer-svc process that started the worker.
PARENT_ENV = "MODELFORGE_WORKER_PARENT"
# The trainer's data dir: how a later trainer of the same data dir recognises a worker.
DATA_DIR_ENV = "MODELFORGE_WORKER_DATA_DIR"
# Seconds a worker asked to stop (SIGTERM) may take to reach its next step and save a checkpoint.
STOP_GRACE_ENV = "MODELFORGE_WORKER_STOP_GRACE_S"
EXIT_ORPHANED = 3
EXIT_TERMINATED = 128 + signal.SIGTERM


def parent_marker(pid: int, start_time: float) -> str:
    return f"{pid}:{start_time:.3f}"


def parse_parent_marker(text: str) -> tuple[int, float] | None:
    pid, _, started = text.partition(":")
    try:
        return int(pid), float(started)
    except ValueError:
        return None


def set_parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG): False where it is unavailable (not Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def pipe_reader_gone(fd: int) -> bool:
    """True when nobody reads the pipe whose write end fd is (Linux reports POLLERR then). An fd this
    process has closed (POLLNVAL: the worker closes its events pipe as it exits) is not a trainer
    gone: ending the process then would kill a worker that finished its job."""
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR, POLLHUP and POLLNVAL are reported whatever is asked
    try:
        return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))
    except OSError:
        return True


def end_process_now(code: int) -> NoReturn:
    """Exits without cleanup, taking the worker's own process group (tokenizer or data-loader
    helpers) along when it leads one."""
    if os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(code)


class Lifeline:
    """The watchdog of one worker process; start() it first thing in the worker."""

    def __init__(
        self,
        parent_pid: int,
        events_fd: int | None = None,
        *,
        stop_grace_s: float = 30.0,
        poll_s: float = 0.5,
        end: Callable[[int], object] = end_process_now,
    ) -> None:
        self.parent_pid = parent_pid
        self.events_fd = events_fd
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self._end = end
        self._stop_asked_at: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, events_fd: int | None) -> Lifeline:
        """The trainer named in PARENT_ENV (else the parent now); the grace from STOP_GRACE_ENV."""
        marker = parse_parent_marker(os.environ.get(PARENT_ENV, ""))
        parent_pid = marker[0] if marker is not None else os.getppid()
        launcher = os.environ.get(LAUNCHER_ENV, "")
        if launcher.isdigit() and "LOCAL_RANK" in os.environ:
            # A rank of a distributed job: its parent is the launcher (launch.py), which in
            # turn watches the trainer.
            parent_pid = int(launcher)
        try:
            grace = float(os.environ.get(STOP_GRACE_ENV, "30"))
        except ValueError:
            grace = 30.0
        return cls(parent_pid, events_fd, stop_grace_s=grace)

    def parent_gone(self) -> bool:
        if os.getppid() != self.parent_pid:
            return True
        return self.events_fd is not None and pipe_reader_gone(self.events_fd)

    def stop_asked(self) -> bool:
        """Records a SIGTERM; True when one was asked before (a second SIGTERM ends the worker)."""
        with self._lock:
            before = self._stop_asked_at is not None
            if not before:
                self._stop_asked_at = time.monotonic()
            return before

    def start(self) -> None:
        """Arms the parent-death signal and the watchdog; ends the process at once when the trainer
        is already gone (it died before prctl took effect)."""
        set_parent_death_signal(signal.SIGTERM)
        if self.parent_gone():
            self._end(EXIT_ORPHANED)
            return
        self._thread = threading.Thread(target=self._watch, name="lifeline", daemon=True)
        self._thread.start()

    def check(self) -> bool:
        """One watchdog round: ends the worker (True) when its trainer is gone or a stop overran."""
        if self.parent_gone():
            self._end(EXIT_ORPHANED)
            return True
        with self._lock:
            asked = self._stop_asked_at
        if asked is not None and time.monotonic() - asked > self.stop_grace_s:
            self._end(EXIT_TERMINATED)
            return True
        return False

    def _watch(self) -> None:
        while not self.check():
            time.sleep(self.poll_s)


def install_stop_handler(lifeline: Lifeline, on_stop: Callable[[], None]) -> None:
    """SIGTERM asks for a graceful stop (on_stop: the training loop stops at its next step and saves a
    checkpoint); a second SIGTERM, or the first one overrunning the grace, ends the worker at once."""

    def handle(_signum: int, _frame: object) -> None:
        if lifeline.stop_asked():
            end_process_now(EXIT_TERMINATED)
        on_stop()

    signal.signal(signal.SIGTERM, handle)
