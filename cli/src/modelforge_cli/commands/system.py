"""`modelforge status`: is the gateway up, what hardware and profile, what is training."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from modelforge_cli.client import ApiClient, ApiError, items_of
from modelforge_cli.commands._common import JsonFlag, api, note
from modelforge_cli.render import cell, fields_table, print_json, stderr, stdout, table

JOB_COLUMNS = [
    ("job_id", "job"),
    ("status", "status"),
    ("progress", "progress %"),
    ("current_step", "step"),
    ("total_steps", "steps"),
    ("model_name", "model"),
    ("created_at", "created"),
]


def _section(client: ApiClient, method: str, path: str, errors: dict[str, str], **kwargs: Any) -> Any:
    try:
        return client.request(method, path, **kwargs)
    except ApiError as exc:
        errors[path] = str(exc)
        return None


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Health, version, hardware and profile, training status and the job queue."""
    errors: dict[str, str] = {}
    with api(ctx) as client:
        health = client.get("/api/health")
        hardware = _section(client, "GET", "/api/finetune/hardware_specs", errors)
        detect = _section(client, "POST", "/api/finetune/detect", errors, json={"task": "text-generation"})
        training = _section(client, "GET", "/api/training_status", errors)
        try:
            jobs: list[dict[str, Any]] | None = items_of(client.get("/api/jobs"), "jobs")
        except ApiError as exc:
            jobs = None
            if not exc.route_missing:
                errors["/api/jobs"] = str(exc)
    if as_json:
        print_json(
            {
                "url": client.config.url,
                "health": health,
                "hardware": hardware,
                "detect": detect,
                "training": training,
                "jobs": jobs,
                "errors": errors,
            }
        )
    else:
        _show(client.config.url, health, hardware, detect, training, jobs)
    for message in errors.values():
        stderr().print(f"error: {message}", markup=False)
    if errors:
        raise typer.Exit(1)


def _show(url: str, health: Any, hardware: Any, detect: Any, training: Any, jobs: list[dict[str, Any]] | None) -> None:
    out = stdout()
    health = health if isinstance(health, dict) else {}
    out.print(
        f"ModelForge at {escape(url)}: [bold]{escape(cell(health.get('status')))}[/] "
        f"(version {escape(cell(health.get('version')))})"
    )
    if isinstance(hardware, dict):
        out.print(fields_table(hardware, title="Hardware"))
    if isinstance(detect, dict):
        out.print(
            f"profile: [bold]{escape(cell(detect.get('profile')))}[/]   recommended for text-generation: "
            f"{escape(cell(detect.get('model_recommendation')))}"
        )
    if isinstance(training, dict):
        line = f"training: [bold]{escape(cell(training.get('status')))}[/]"
        if training.get("job_id"):
            line += f" job {escape(str(training['job_id']))}"
        if training.get("total_steps"):
            line += f"  step {cell(training.get('current_step'))}/{training['total_steps']}"
        if training.get("progress") is not None:
            line += f"  {cell(training.get('progress'))}%"
        out.print(line)
    if jobs is None:
        note("this gateway has no GET /api/jobs yet: the queue is not shown")
    elif jobs:
        rows = [
            {**job, "model_name": (job.get("config") or {}).get("model_name", job.get("model_name"))} for job in jobs
        ]
        out.print(table(rows, JOB_COLUMNS, title="Jobs"))
    else:
        out.print("jobs: none queued or running")
