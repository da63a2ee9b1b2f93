"""Entry point of a worker process: python -m modelforge_trainer.worker JOB_JSON --events-fd N.

Exit code 0 with a result file: completed or stopped on request. Anything else is a failure; the
service reads the error message sent on the events pipe (the exception's last line, no traceback).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import traceback
from pathlib import Path

from modelforge_trainer.worker.protocol import EXIT_FAILED, EXIT_OK, WorkerJob
from modelforge_trainer.worker.reporting import EventWriter, StopFlag, describe_exception

PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent_pid: int) -> None:
    """Asks the kernel to send SIGTERM (a graceful stop) when trainer-svc dies, so no worker outlives it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge_trainer.worker")
    parser.add_argument("job_file", type=Path)
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)

    events = EventWriter(args.events_fd)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    _stop_with_parent(os.getppid())

    try:
        job = WorkerJob.read(args.job_file)
        if job.config.get("provider") == "unsloth":
            # unsloth patches transformers, trl and peft: it must be imported before any of them.
            import unsloth  # noqa: F401

        from modelforge_trainer.worker.run import run_job

        result = run_job(job, events, stop)
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
