"""`modelforge estimate` and `modelforge train`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelforge_cli.client import CliError
from modelforge_cli.commands._common import JsonFlag, api, follow_job
from modelforge_cli.config import load_run_file
from modelforge_cli.render import estimate_advice, estimate_summary, estimate_table, print_json, stdout


class Precision(StrEnum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Provider(StrEnum):
    huggingface = "huggingface"
    unsloth = "unsloth"


class Distributed(StrEnum):
    ddp = "ddp"
    fsdp = "fsdp"


def estimate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id or local model folder.")],
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="sft, qlora, dpo, rlhf ...")],
    task: Annotated[str, typer.Option(help="The task the model is trained for.")] = "text-generation",
    lora_r: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    max_seq_length: Annotated[int | None, typer.Option(min=1)] = None,
    precision: Annotated[Precision | None, typer.Option(case_sensitive=False)] = None,
    use_4bit: Annotated[bool | None, typer.Option("--use-4bit/--no-4bit", show_default=False)] = None,
    provider: Annotated[Provider | None, typer.Option(case_sensitive=False, help="huggingface or unsloth.")] = None,
    gradient_accumulation_steps: Annotated[
        int | None, typer.Option(min=1, help="Kept by proposals of a smaller per-device batch.")
    ] = None,
    lora_dropout: Annotated[float | None, typer.Option(min=0.0, max=0.999)] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", show_default=False)
    ] = None,
    processes_per_node: Annotated[
        int | None, typer.Option(min=1, max=64, help="Training processes per node (one per GPU).")
    ] = None,
    num_nodes: Annotated[int | None, typer.Option(min=1, max=1024, help="Nodes of the job.")] = None,
    distributed: Annotated[
        Distributed | None,
        typer.Option(case_sensitive=False, help="ddp (a full copy per process) or fsdp (sharded)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Predicted peak training memory (GiB), whether it fits this machine, and if not the nearest
    settings that do. For a job of several processes, every size is one process's."""
    body: dict[str, Any] = {"model_name": model, "strategy": strategy, "task": task}
    optional = {
        "lora_r": lora_r,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "precision": precision.value if precision else None,
        "use_4bit": use_4bit,
        "provider": provider.value if provider else None,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "lora_dropout": lora_dropout,
        "gradient_checkpointing": gradient_checkpointing,
        "processes_per_node": processes_per_node,
        "num_nodes": num_nodes,
        "distributed": distributed.value if distributed else None,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    with api(ctx) as client:
        answer = client.post("/api/finetune/estimate_memory", json=body)
    if as_json:
        print_json(answer)
        return
    answer = answer if isinstance(answer, dict) else {}
    out = stdout()
    out.print(estimate_table(answer))
    out.print(estimate_summary(answer))
    advice = estimate_advice(answer)
    if advice:
        out.print(advice)


# flag name -> start_training body field; flags given on the command line override the run file
REQUIRED_FIELDS = {"task": "--task", "model_name": "--model", "dataset": "--dataset"}


def train(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Option(help="text-generation, summarization, extractive-question-answering.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id or local model folder.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="An uploaded dataset's filename.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s")] = None,
    provider: Annotated[str | None, typer.Option(help="huggingface or unsloth.")] = None,
    epochs: Annotated[float | None, typer.Option(min=0)] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0, help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-device train batch size.")] = None,
    max_seq_length: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    lora_r: Annotated[int | None, typer.Option(min=1)] = None,
    lora_alpha: Annotated[int | None, typer.Option(min=1)] = None,
    name: Annotated[str | None, typer.Option(help="Name of the resulting model.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Start even if the memory estimate says it won't fit.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", exists=True, dir_okay=False, help="YAML run file: start_training body fields."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until the job ends.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a fine-tuning job; with --follow, show its progress and exit 0 only if it completes."""
    body = load_run_file(config) if config else {}
    flags = {
        "task": task,
        "model_name": model,
        "dataset": dataset,
        "strategy": strategy,
        "provider": provider,
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "per_device_train_batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "max_steps": max_steps,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "name": name,
        "force": force or None,
    }
    body.update({key: value for key, value in flags.items() if value is not None})
    missing = [flag for key, flag in REQUIRED_FIELDS.items() if not body.get(key)]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)} (a flag, or the field in --config)")
    with api(ctx) as client:
        answer = client.post("/api/start_training", json=body)
    job_id = str(answer.get("job_id") or "") if isinstance(answer, dict) else ""
    if follow and not job_id:
        raise CliError(f"POST /api/start_training answered without a job_id: {answer}")
    if as_json and not follow:
        print_json(answer)
        return
    if not as_json:
        stdout().print(f"started job [bold]{escape(job_id)}[/]")
    if follow:
        follow_job(ctx, job_id, as_json)
