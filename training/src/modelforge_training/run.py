"""One job, start to finish, inside the worker process: data, model, training, evaluation, saving."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from modelforge_common.dataset_rows import load_rows
from modelforge_training.callbacks import ProgressCallback
from modelforge_training.checkpoints import latest_checkpoint
from modelforge_training.distributed import enable_fsdp_on_cpu, rank_info, under_torchrun
from modelforge_training.events import EventSink, StopFlag
from modelforge_training.protocol import WorkerResult
from modelforge_training.runtime import detect_runtime
from modelforge_training.spec import TrainingJobSpec, recorded_config
from modelforge_training.strategies import load_strategy
from modelforge_training.strategies.common import StrategyContext
from modelforge_training.tasks import split_rows
from modelforge_training.tracking import JobTracking


def _latest_checkpoint(checkpoint_dir: str) -> str:
    found = latest_checkpoint(Path(checkpoint_dir))
    return str(found) if found else ""


def used_config(context: StrategyContext, trainer: Any) -> dict[str, Any]:
    """The configuration the job actually trained with, for the registry."""
    used = recorded_config(context.spec)
    used["bf16"] = context.runtime.bf16
    used.update(context.runtime.details())
    used.update(context.details)
    used["train_examples"] = len(context.train_rows)
    used["eval_examples"] = len(context.eval_rows)
    used["total_steps"] = int(trainer.state.max_steps)
    return used


class OtherRankTracking:
    """What ranks other than 0 of a distributed job track: nothing."""

    def finish(self, *args: Any, **kwargs: Any) -> None:
        return None

    def details(self) -> dict[str, str]:
        return {}


def run_job(job: TrainingJobSpec, events: EventSink, stop: StopFlag) -> WorkerResult:
    config = job.config
    rank = rank_info()
    if rank.distributed and torch.cuda.is_available():
        # One GPU per process (nccl); set before the model loads, which places it on the current device.
        torch.cuda.set_device(rank.local_rank)
    runtime = detect_runtime(config)
    events.log(
        f"Preparing {config.strategy} training of {config.model_name} for {config.task} "
        f"({config.provider}, {runtime.device}, {runtime.precision})"
    )
    rows = load_rows(job.dataset_path)
    if job.eval_dataset_path:
        # Evaluation has a file of its own (OpenAI's validation_file): every dataset row is trained on.
        train_rows, eval_rows = rows, load_rows(job.eval_dataset_path)
    else:
        train_rows, eval_rows = split_rows(rows, config.eval_split, config.seed)
    events.log(f"{len(train_rows)} training and {len(eval_rows)} held-out evaluation examples")

    callback = ProgressCallback(events, stop)
    context = StrategyContext(job, runtime, train_rows, eval_rows, events, callback)
    strategy = load_strategy(config.task, config.strategy)
    events.log(f"Loading {config.model_name}")
    trainer = strategy.build_trainer(context)
    # TensorBoard beside the job's log, MLflow when MODELFORGE_MLFLOW_URI is set (tracking.py).
    # Rank 0 alone tracks a distributed job (one run, one set of event files).
    tracking: JobTracking | OtherRankTracking = OtherRankTracking()
    if rank.is_main:
        tracking = JobTracking.from_environment(job, events.log)
        trainer.add_callback(tracking)
    if under_torchrun():
        context.details.update(world_size=rank.world_size, distributed_backend=trainer.args.ddp_backend or "")
        if config.distributed == "fsdp" and not runtime.cuda:
            enable_fsdp_on_cpu(trainer)
        if config.distributed == "fsdp" and not trainer.is_fsdp_enabled:
            raise RuntimeError("FSDP was asked for but the trainer did not enable it")
    if stop.is_set():
        tracking.finish("stopped")
        return WorkerResult(outcome="stopped", checkpoint=_latest_checkpoint(job.checkpoint_dir))

    if job.resume_checkpoint:
        events.log(f"Resuming from {job.resume_checkpoint}")
    train_output = trainer.train(resume_from_checkpoint=job.resume_checkpoint or None)
    if callback.stopped_at_step is not None:
        tracking.finish("stopped", step=callback.stopped_at_step)
        return WorkerResult(
            outcome="stopped",
            checkpoint=_latest_checkpoint(job.checkpoint_dir),
            step=callback.stopped_at_step,
        )

    events.log(f"Evaluating on {len(eval_rows)} held-out examples")
    metrics = strategy.evaluate(trainer, context)
    final_loss = callback.last_loss if callback.last_loss is not None else float(train_output.training_loss)
    metrics = {"final_loss": final_loss, **metrics}
    # trl's running count of the tokens trained on, at the last logging step (OpenAI's trained_tokens).
    trained_tokens = callback.last_logs.get("num_tokens")
    if isinstance(trained_tokens, int | float) and not isinstance(trained_tokens, bool) and trained_tokens > 0:
        metrics["trained_tokens"] = float(trained_tokens)
    events.metrics(metrics, "Evaluation finished")

    output_dir = Path(job.output_dir)
    events.log(f"Saving the adapter to {output_dir}")
    trainer.save_model(str(output_dir))  # every rank takes part (FSDP gathers); rank 0 writes
    if rank.is_main and context.tokenizer is not None:
        context.tokenizer.save_pretrained(str(output_dir))
    if rank.is_main:
        strategy.save_artifacts(trainer, context, output_dir)
    tracking.finish("completed", metrics, str(output_dir), int(trainer.state.global_step))
    return WorkerResult(
        outcome="completed",
        config={**used_config(context, trainer), **tracking.details()},
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        output_dir=str(output_dir.resolve()),
        step=int(trainer.state.global_step),
    )
