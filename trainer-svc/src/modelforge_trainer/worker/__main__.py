"""Entry point of a worker process: python -m modelforge_trainer.worker JOB_JSON --events-fd N.

Exit code 0 with a result file: completed or stopped on request. Anything else is a failure; the
service reads the error message sent on the events pipe (the exception's last line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from modelforge_trainer.worker.lifeline import Lifeline, install_stop_handler
from modelforge_trainer.worker.protocol import EXIT_FAILED, EXIT_OK, WorkerJob
from modelforge_trainer.worker.reporting import EventWriter, StopFlag, describe_exception


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelforge_trainer.worker")
    parser.add_argument("job_file", type=Path)
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)

    # First, before the slow imports: a trainer killed now must not leave this process behind.
    lifeline = Lifeline.from_environment(args.events_fd)
    stop = StopFlag()
    install_stop_handler(lifeline, stop.set)
    lifeline.start()
    events = EventWriter(args.events_fd)

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
