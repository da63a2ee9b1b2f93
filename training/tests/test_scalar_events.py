"""The TensorBoard event file of a job's scalars (scalar_events.py), read back with tensorboard's own
reader: one event per step holding several tags, flushed on request, by its timer thread, and at close."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from modelforge_training.scalar_events import ScalarEventFile
from modelforge_training.tracking import tensorboard_tags

# Longer than any test: only flush() and close() write to the file unless a test asks for the timer.
NO_TIMER_S = 3600.0


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_each_steps_values_read_back_under_their_tags(tmp_path: Path) -> None:
    events = ScalarEventFile(tmp_path / "tb", flush_s=NO_TIMER_S)
    events.add_scalars({"train/loss": 2.5, "train/learning_rate": 0.001}, step=1)
    events.add_scalars({"train/loss": 2.25, "train/learning_rate": 0.0005}, step=2)
    events.add_scalars({}, step=3)  # nothing logged: no event
    events.close()
    assert events.path.name.startswith("events.out.tfevents.")
    assert read_scalars(tmp_path / "tb") == {
        "train/loss": [(1, 2.5), (2, 2.25)],
        "train/learning_rate": [(1, pytest.approx(0.001)), (2, pytest.approx(0.0005))],
    }


def test_flush_makes_buffered_events_readable_before_close(tmp_path: Path) -> None:
    events = ScalarEventFile(tmp_path / "tb", flush_s=NO_TIMER_S)
    events.add_scalars({"train/loss": 3.0}, step=1)
    events.flush()
    assert read_scalars(tmp_path / "tb") == {"train/loss": [(1, 3.0)]}
    events.close()


def test_the_timer_thread_flushes_without_being_asked(tmp_path: Path) -> None:
    events = ScalarEventFile(tmp_path / "tb", flush_s=0.05)
    events.add_scalars({"train/loss": 1.5}, step=7)
    deadline = time.monotonic() + 30  # a bound on waiting, not a speed check
    while read_scalars(tmp_path / "tb") != {"train/loss": [(7, 1.5)]}:
        assert time.monotonic() < deadline, "the buffered event never reached the file"
        time.sleep(0.05)
    events.close()


def test_events_after_close_are_dropped_and_close_twice_is_harmless(tmp_path: Path) -> None:
    events = ScalarEventFile(tmp_path / "tb", flush_s=NO_TIMER_S)
    events.add_scalars({"eval/loss": 1.0}, step=4)
    events.close()
    events.add_scalars({"eval/loss": 9.0}, step=5)
    events.flush()
    events.close()
    assert read_scalars(tmp_path / "tb") == {"eval/loss": [(4, 1.0)]}


def test_metric_names_become_tags_at_their_first_underscore() -> None:
    assert tensorboard_tags({"train_loss": 1.0, "train_mean_token_accuracy": 0.5, "eval_perplexity": 3.0}) == {
        "train/loss": 1.0,
        "train/mean_token_accuracy": 0.5,
        "eval/perplexity": 3.0,
    }
