"""The TrainerCallback that reports progress to the service and stops training on request."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from modelforge_training.distributed import stop_everywhere
from modelforge_training.events import EventSink, StopFlag
from modelforge_training.protocol import Progress


def progress_of(
    state: TrainerState,
    loss: float | None = None,
    learning_rate: float | None = None,
    phase: tuple[int, int] = (0, 1),
) -> Progress:
    """Where training stands; phase = (index, count) when a job trains in several phases (rlhf), each
    getting an equal share of the progress percentage."""
    total_steps = int(state.max_steps or 0)
    index, count = phase
    fraction = state.global_step / total_steps if total_steps else 0.0
    total_epochs = max(1, math.ceil(state.num_train_epochs or 1))
    epoch = float(state.epoch or 0.0)
    return Progress(
        step=int(state.global_step),
        total_steps=total_steps,
        epoch=epoch,
        # 1-based: epoch 0.4 is the first epoch, 1.0 the end of the first, 1.2 the second.
        current_epoch=min(total_epochs, max(1, math.ceil(epoch))),
        total_epochs=total_epochs,
        progress=100.0 * (index + fraction) / count,
        loss=loss,
        learning_rate=learning_rate,
        gpu_memory_bytes=gpu_memory_in_use(),
    )


def gpu_memory_in_use() -> int | None:
    """CUDA memory this process's torch holds on every GPU (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    return sum(int(torch.cuda.memory_reserved(index)) for index in range(torch.cuda.device_count()))


def finite_number(value: Any) -> float | None:
    """A logged value as a float, or None for a non-number (booleans, strings, NaN, infinities)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class ProgressCallback(TrainerCallback):
    """Sends a progress message per optimizer step (with loss and learning rate on logging steps), and
    turns a stop request into "save a checkpoint and stop" at the next step."""

    def __init__(self, events: EventSink, stop: StopFlag, loss_key: str = "loss") -> None:
        self.events = events
        self.stop = stop
        self.loss_key = loss_key
        self.last_loss: float | None = None
        self.last_logs: dict[str, Any] = {}
        self.stopped_at_step: int | None = None
        self.phase = (0, 1)

    def begin_phase(self, index: int, count: int, name: str) -> None:
        self.phase = (index, count)
        self.last_loss = None
        self.last_logs = {}
        self.events.log(f"Phase {index + 1}/{count}: {name}")

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.events.log(
            f"Training for {state.max_steps} step(s) over {max(1, math.ceil(state.num_train_epochs or 1))} epoch(s)"
        )
        self.events.progress(progress_of(state, phase=self.phase))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        # Every rank of a distributed job stops at the same step, whichever of them saw the request.
        if stop_everywhere(self.stop.is_set(), args.device) and not control.should_training_stop:
            self.stopped_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        elif state.global_step >= state.max_steps:
            # The finished adapter is saved on its own; a full checkpoint (optimizer state) would only
            # cost time and disk.
            control.should_save = False
        if not control.should_log:
            # Logging steps report in on_log, which carries the loss.
            self.events.progress(progress_of(state, phase=self.phase))
        return control

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        loss = finite_number(logs.get(self.loss_key))
        if loss is None:
            return
        self.last_loss = loss
        self.last_logs = dict(logs)
        self.events.progress(progress_of(state, loss, finite_number(logs.get("learning_rate")), self.phase))
