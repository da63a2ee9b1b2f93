"""The training benchmark again at a realistic step time: the ~110M-parameter random-init Llama
(`--size small`), so that the platform's fixed cost per step (one progress event through trainer-svc,
NATS and the gateway) is weighed against a step that takes about a second rather than the tiny
model's 20 ms. Runs after the generation benchmark, which generates with the latest model.

In quick mode (the smoke test) the tiny model stands in: building and training 110M parameters
would not fit a test's time.
"""

from __future__ import annotations

import dataclasses

from bench import training
from bench.common import BenchContext, Section, build_small_model

TITLE = "Training at ~110M parameters: plain trl vs ModelForge"


def run(context: BenchContext) -> Section:
    if context.quick or context.size == "small":
        sized = context
    else:
        model_dir = build_small_model(context.work_dir / "models" / "small-llama", context.model_dir)
        sized = dataclasses.replace(context, size="small", model_dir=model_dir)
    try:
        section = training.run(sized, key="training_small", title=TITLE)
    finally:
        if sized is not context:
            sized.http.close()
    if context.quick:
        section.notes.append("Quick mode: the tiny model stands in for the ~110M-parameter one.")
    elif context.size == "small":
        section.notes.append("This run's main training benchmark already used the small model (--size small).")
    return section
