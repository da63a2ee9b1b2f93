"""The launcher of a distributed job: torchrun's elastic agent, run in the worker process the service
started (python -m modelforge_training job.json --events-fd N, for a job of several processes).

Why torchrun's API inside our own process rather than the `torchrun` command: the service's
supervision stays what it is for one process. This process keeps the worker's lifeline (it ends, and
takes every rank along, when its trainer is gone), holds the events pipe the ranks' rank 0 writes to,
and turns a stop (SIGTERM) into a graceful stop of every rank: the agent runs in a thread, so it
installs no signal handlers of its own (it would otherwise tear the ranks down on SIGTERM, before
they save a checkpoint), and this process forwards SIGTERM to the ranks, which stop together at
their next step (distributed.stop_everywhere), save a checkpoint, and exit 0.

A rank that fails (an exception, a kill -9) makes the agent stop the others (SIGTERM, then SIGKILL
after its shutdown timeout); with max_restarts 0 the launch fails and the job ends in ERROR with the
rank and how it ended. Ranks run in sessions of their own (torch starts them so); each also has a
lifeline watching this process, so none outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, NoReturn

import psutil

from modelforge_training.events import EventSink, PipeEventSink
from modelforge_training.lifeline import EXIT_TERMINATED, LAUNCHER_ENV, Lifeline, end_process_now
from modelforge_training.protocol import EXIT_FAILED, EXIT_OK
from modelforge_training.spec import TrainingJobSpec, world_size

WORKER_MODULE = "modelforge_training"
# Seconds torch's agent gives ranks to exit after SIGTERM (when another rank failed) before SIGKILL.
RANK_SHUTDOWN_S = 10


def rank_processes() -> list[psutil.Process]:
    """The ranks: this process's children (and theirs: data-loader or tokenizer helpers)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def signal_ranks(signum: int) -> None:
    for process in rank_processes():
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


def end_with_ranks(code: int) -> NoReturn:
    """Ends every rank (they do not share this process group), then this process."""
    signal_ranks(signal.SIGKILL)
    end_process_now(code)


def torchrun_arguments(job_file: Path, job: TrainingJobSpec, events_fd: int) -> list[str]:
    """torchrun's command line for one node (--standalone): rendezvous on this machine, no restarts (a failed rank
    fails the job; a retry resumes from the last checkpoint instead)."""
    processes = max(1, job.config.processes_per_node)
    return [
        # torchrun's --standalone, spelled out (the flag is applied by torchrun's main, not its API):
        # a c10d rendezvous on a free port of this machine.
        "--nnodes=1",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0",
        f"--nproc-per-node={processes}",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        f"--rdzv-id={job.job_id or uuid.uuid4().hex}",
        "-m",
        WORKER_MODULE,
        str(job_file),
        "--events-path",
        f"/proc/{os.getpid()}/fd/{events_fd}",
    ]


def describe_failure(error: BaseException, world: int) -> tuple[int | None, str]:
    """(the first failed rank, a sentence saying how it ended) from torch's ChildFailedError."""
    failures: dict[int, Any] = getattr(error, "failures", {}) or {}
    if not failures:
        return None, f"distributed training failed: {type(error).__name__}: {error}"
    rank, failure = min(failures.items(), key=lambda item: item[1].timestamp)
    code = int(failure.exitcode)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        how = f"was killed by signal {-code} ({name})"
    else:
        how = f"exited with code {code}"
    return rank, f"rank {rank} of {world} {how}; the job's other processes were stopped"


class RankLauncher:
    def __init__(self, job_file: Path, job: TrainingJobSpec, events_fd: int, events: EventSink) -> None:
        self.job_file = job_file
        self.job = job
        self.events_fd = events_fd
        self.events = events
        self.error: BaseException | None = None
        self.stop_asked = threading.Event()
        self._stopped_pids: set[int] = set()

    def forward_stop(self) -> None:
        """SIGTERM, once, to each rank not yet asked (ranks started after the stop get it too)."""
        for process in rank_processes():
            if process.pid not in self._stopped_pids:
                self._stopped_pids.add(process.pid)
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGTERM)

    def _launch(self) -> None:
        from torch.distributed.launcher.api import elastic_launch
        from torch.distributed.run import config_from_args, parse_args

        try:
            config, command, command_args = config_from_args(
                # torch.distributed.run.parse_args carries no annotations.
                parse_args(torchrun_arguments(self.job_file, self.job, self.events_fd))  # type: ignore[no-untyped-call]
            )
            config.shutdown_timeout = RANK_SHUTDOWN_S
            elastic_launch(config, command)(*command_args)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self.error = exc

    def run(self) -> int:
        world = world_size(self.job.config)
        self.events.log(f"Starting {world} training processes (torchrun, {self.job.config.distributed})")
        thread = threading.Thread(target=self._launch, name="torchrun", daemon=True)
        thread.start()
        # Joined in short waits: signal handlers run in this (the main) thread between them.
        while thread.is_alive():
            thread.join(0.5)
            if self.stop_asked.is_set():
                self.forward_stop()
        if self.error is None:
            return EXIT_OK
        rank, message = describe_failure(self.error, world)
        failures = getattr(self.error, "failures", {}) or {}
        rank_zero_reported = rank == 0 and rank in failures and int(failures[rank].exitcode) > 0
        if not rank_zero_reported:  # rank 0 sent its own exception's message already
            self.events.error(message)
        sys.stderr.write(message + "\n")
        return EXIT_FAILED


def main(job_file: Path, job: TrainingJobSpec, events_fd: int) -> int:
    lifeline = Lifeline.from_environment(events_fd)
    lifeline._end = end_with_ranks
    events = PipeEventSink(events_fd)
    launcher = RankLauncher(job_file, job, events_fd, events)

    def handle_stop(_signum: int, _frame: object) -> None:
        # The first SIGTERM: every rank stops at its next step with a checkpoint. A second one, or the
        # first overrunning the grace (the lifeline's watchdog), ends the ranks and this process.
        if lifeline.stop_asked():
            end_with_ranks(EXIT_TERMINATED)
        launcher.stop_asked.set()  # forwarded by the launcher's loop, in this thread

    signal.signal(signal.SIGTERM, handle_stop)
    lifeline.start()
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    try:
        return launcher.run()
    finally:
        events.close()
