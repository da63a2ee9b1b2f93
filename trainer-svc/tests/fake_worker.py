"""A stand-in for `python -m modelforge_training` that speaks the same protocol without torch.

The job's config "name" picks the scenario: complete, crash, hang (stops gracefully on SIGTERM),
stubborn (ignores SIGTERM), silent-exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from modelforge_training.events import EventSink, PipeEventSink, StopFlag, describe_exception
from modelforge_training.protocol import Progress, WorkerResult
from modelforge_training.spec import read_spec, recorded_config

TOTAL_STEPS = 3


def step(events: EventSink, number: int) -> None:
    events.progress(
        Progress(
            step=number,
            total_steps=TOTAL_STEPS,
            epoch=number / TOTAL_STEPS,
            current_epoch=1,
            total_epochs=1,
            progress=100.0 * number / TOTAL_STEPS,
            loss=2.0 / number,
            learning_rate=1e-3,
        )
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job_file", type=Path)
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)
    job = read_spec(args.job_file)
    scenario = job.config.name or "complete"
    events = PipeEventSink(args.events_fd)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if scenario == "stubborn" else lambda *_: stop.set())
    events.log(f"fake worker: {scenario}")
    try:
        if scenario == "crash":
            step(events, 1)
            raise ValueError("first line\nbad things happened")
        if scenario == "silent-exit":
            sys.stderr.write("something broke\n")
            return 3
        if scenario in ("hang", "stubborn"):
            step(events, 1)
            while not stop.is_set():
                time.sleep(0.05)
            checkpoint = Path(job.checkpoint_dir) / "checkpoint-1"
            checkpoint.mkdir(parents=True)
            (checkpoint / "trainer_state.json").write_text("{}")
            WorkerResult(outcome="stopped", checkpoint=str(checkpoint), step=1).write(Path(job.result_path))
            return 0
        for number in range(1, TOTAL_STEPS + 1):
            step(events, number)
        metrics = {"final_loss": 0.5, "eval_loss": 0.75, "perplexity": 2.117}
        events.metrics(metrics, "Evaluation finished")
        output = Path(job.output_dir)
        output.mkdir(parents=True)
        (output / "adapter_config.json").write_text("{}")
        WorkerResult(
            outcome="completed",
            config={**recorded_config(job), "device": "cpu"},
            metrics=metrics,
            output_dir=str(output),
            step=TOTAL_STEPS,
        ).write(Path(job.result_path))
        return 0
    except Exception as exc:  # noqa: BLE001 - reported like the real worker does
        events.error(describe_exception(exc))
        return 1
    finally:
        events.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
