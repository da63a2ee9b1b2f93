"""Workers never outlive their trainer (issue 14): the lifeline ends a worker whose trainer died,
whether or not its events pipe broke and whatever it does with SIGTERM, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from modelforge_training.lifeline import EXIT_ORPHANED, EXIT_TERMINATED, Lifeline, install_stop_handler

pytestmark = pytest.mark.timeout(60)

# A stand-in worker: arms its lifeline with the given parent, then ignores SIGTERM (stuck in a native
# call, say) or handles it like the real worker, and sleeps; it prints its pid once armed.
WORKER = """
import os, signal, sys, time
from modelforge_training.lifeline import Lifeline, install_stop_handler
events_fd = int(sys.argv[1]) if sys.argv[1] != "-" else None
lifeline = Lifeline(os.getppid(), events_fd, stop_grace_s=float(sys.argv[2]), poll_s=0.1)
install_stop_handler(lifeline, lambda: None)  # a stop the training loop never gets to honour
lifeline.start()
if sys.argv[3] == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(os.getpid(), flush=True)
while True:
    time.sleep(1)
"""

# A stand-in trainer: starts the worker (passing it the events pipe's write end) and waits.
TRAINER = """
import subprocess, sys
fd = sys.argv[1]
pass_fds = (int(fd),) if fd != "-" else ()
worker = subprocess.Popen([sys.executable, "-c", sys.argv[2], fd, "30", sys.argv[3]], pass_fds=pass_fds,
                          stdout=subprocess.PIPE, text=True)
print(worker.stdout.readline().strip(), flush=True)
worker.wait()
"""


def wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def start_trainer(events_fd: int | None, sigterm: str) -> tuple[subprocess.Popen[str], int]:
    fd = str(events_fd) if events_fd is not None else "-"
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, fd, WORKER, sigterm],
        pass_fds=(events_fd,) if events_fd is not None else (),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert trainer.stdout is not None
    return trainer, int(trainer.stdout.readline())


@pytest.mark.parametrize("sigterm", ["handle", "ignore-sigterm"])
def test_a_worker_ends_within_seconds_of_its_trainers_kill_9_though_its_pipe_stays_open(sigterm: str) -> None:
    read_fd, write_fd = os.pipe()  # this test keeps a reader: the pipe never breaks
    try:
        trainer, worker_pid = start_trainer(write_fd, sigterm)
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait()
        assert wait_gone(worker_pid, 10), f"worker {worker_pid} outlived its trainer"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_worker_ends_when_its_events_pipe_has_no_reader_left() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    ended: list[int] = []
    lifeline = Lifeline(os.getppid(), write_fd, end=ended.append)
    try:
        assert lifeline.check() and ended == [EXIT_ORPHANED]
    finally:
        os.close(write_fd)


def test_a_worker_whose_trainer_died_before_it_started_ends_at_once() -> None:
    ended: list[int] = []
    Lifeline(os.getpid(), None, end=ended.append).start()  # "its trainer" is not its parent
    assert ended == [EXIT_ORPHANED]
    alive: list[int] = []
    Lifeline(os.getppid(), None, end=alive.append, poll_s=3600).start()
    assert alive == []


def test_sigterm_ends_a_worker_whose_stop_overruns_the_grace_and_a_second_sigterm_at_once(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, "-", "0.5", "handle"], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and int(worker.stdout.readline()) == worker.pid
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == EXIT_TERMINATED or worker.returncode == -signal.SIGKILL

    second = subprocess.Popen([sys.executable, "-c", WORKER, "-", "600", "handle"], stdout=subprocess.PIPE, text=True)
    assert second.stdout is not None and int(second.stdout.readline()) == second.pid
    second.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # the first SIGTERM only asks for a graceful stop
    assert second.poll() is None
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=10) in (EXIT_TERMINATED, -signal.SIGKILL)


def test_stop_handler_asks_for_a_graceful_stop_first() -> None:
    asked: list[bool] = []
    lifeline = Lifeline(os.getppid(), None, end=lambda code: None)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        install_stop_handler(lifeline, lambda: asked.append(True))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert asked == [True] and lifeline.stop_asked()  # recorded: the next one would end it
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_closed_events_pipe_is_not_a_trainer_gone() -> None:
    """The worker closes its events pipe as it exits: the watchdog must not kill it for that."""
    from modelforge_training.lifeline import pipe_reader_gone

    read_fd, write_fd = os.pipe()
    assert not pipe_reader_gone(write_fd)
    os.close(read_fd)
    assert pipe_reader_gone(write_fd)  # the reader went away
    os.close(write_fd)
    assert not pipe_reader_gone(write_fd)  # our own end closed: nothing to say about the reader
