"""Entry point of a worker process: python -m modelforge_trainer.worker JOB_JSON --events-fd N.

Exit code 0 with a result file: completed or stopped on request. Anything else is a failure; the
service reads the error message sent on the events pipe (the exception's last line, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from modelforge_trainer.worker.distributed import distributed_mode, rank_info, under_torchrun
from modelforge_trainer.worker.lifeline import Lifeline, install_stop_handler
from modelforge_trainer.worker.protocol import EXIT_FAILED, EXIT_OK, WorkerJob
from modelforge_trainer.worker.reporting import EventWriter, StopFlag, describe_exception


def _read_job_quietly(path: Path) -> WorkerJob | None:
    """The job file, or None where it cannot be read (the worker reports that as the job's error)."""
    try:
        return WorkerJob.read(path)
    except (OSError, ValueError, TypeError):
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge_trainer.worker")
    parser.add_argument("job_file", type=Path)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--events-fd", type=int, help="the events pipe the service reads")
    # A rank of a distributed job: the launcher's pipe (/proc/<launcher pid>/fd/N); rank 0 writes to it.
    target.add_argument("--events-path", help=argparse.SUPPRESS)
    # A rank in a Kubeflow TrainJob pod: rank 0 publishes to the job's NATS subject (worker/nats_events.py).
    target.add_argument("--events-nats", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.events_fd is not None and not under_torchrun():
        job = _read_job_quietly(args.job_file)
        if job is not None and distributed_mode(job.config):
            # Several processes: this one becomes their launcher (worker/launch.py).
            from modelforge_trainer.worker.launch import main as launch_ranks

            return launch_ranks(args.job_file, job, args.events_fd)

    rank = rank_info()
    events_fd = args.events_fd
    if args.events_path is not None and rank.is_main:
        events_fd = os.open(args.events_path, os.O_WRONLY | os.O_CLOEXEC)
    # First, before the slow imports: a trainer killed now must not leave this process behind.
    lifeline = Lifeline.from_environment(events_fd)
    stop = StopFlag()
    install_stop_handler(lifeline, stop.set)
    lifeline.start()
    events: EventWriter = EventWriter(events_fd)
    if args.events_nats and rank.is_main:
        from modelforge_trainer.worker.nats_events import NatsEventWriter

        events = NatsEventWriter.from_environment()

    try:
        job = WorkerJob.read(args.job_file)
        if job.config.get("provider") == "unsloth":
            # unsloth patches transformers, trl and peft: it must be imported before any of them.
            import unsloth  # noqa: F401

        from modelforge_trainer.worker.run import run_job

        result = run_job(job, events, stop)
        if rank.is_main:
            result.write(Path(job.result_path))
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then the process exits
        events.error(describe_exception(exc))
        traceback.print_exc()
        return EXIT_FAILED
    finally:
        events.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
