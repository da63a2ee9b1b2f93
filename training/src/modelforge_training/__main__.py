"""Entry point of the runtime: python -m modelforge_training JOB_JSON [--events-fd N].

Runs one job. With --events-fd the events go to the supervisor's pipe; without, to the sink the job
file names (a Kubeflow pod's "nats", registered by trainer-svc). Exit code 0 with a result file:
completed or stopped on request. Anything else is a failure: the error message is sent as an event
(the exception's last line, no traceback); a job file that cannot be read or holds a bad value exits
2 with the reason on stderr (and on the pipe when given).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from modelforge_training.distributed import rank_info, under_torchrun
from modelforge_training.events import (
    PIPE_SINK,
    EventSink,
    PipeEventSink,
    StopFlag,
    describe_exception,
    registered_sink,
)
from modelforge_training.lifeline import Lifeline, install_stop_handler
from modelforge_training.protocol import EXIT_BAD_JOB, EXIT_FAILED, EXIT_OK
from modelforge_training.spec import distributed_mode, read_spec


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge_training")
    parser.add_argument("job_file", type=Path)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--events-fd", type=int, help="the events pipe the supervisor reads")
    # A rank of a distributed job: the launcher's pipe (/proc/<launcher pid>/fd/N); rank 0 writes to it.
    target.add_argument("--events-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        job = read_spec(args.job_file)
    except (OSError, ValueError) as exc:
        message = f"job file {args.job_file} cannot be used: {exc}"
        sys.stderr.write(f"modelforge_training: {message}\n")
        if args.events_fd is not None:
            # The supervisor shows what its worker said last as the job's error.
            sink = PipeEventSink(args.events_fd)
            sink.error(message)
            sink.close()
        return EXIT_BAD_JOB

    if args.events_fd is not None and not under_torchrun() and distributed_mode(job.config):
        # Several processes: this one becomes their launcher (launch.py).
        from modelforge_training.launch import main as launch_ranks

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
    events: EventSink = PipeEventSink(events_fd)
    use_named_sink = args.events_fd is None and args.events_path is None and job.event_sink not in ("", PIPE_SINK)
    try:
        if use_named_sink and rank.is_main:
            events = registered_sink(job.event_sink)
        if job.config.provider == "unsloth":
            # unsloth patches transformers, trl and peft: it must be imported before any of them.
            import unsloth  # noqa: F401

        from modelforge_training.run import run_job

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
