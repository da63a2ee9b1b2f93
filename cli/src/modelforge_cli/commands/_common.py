"""Pieces every command module shares: the API client of the current invocation, the --json flag,
confirmed deletes, and following a job to its end."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelforge_cli.client import ApiClient, CliError
from modelforge_cli.config import CliConfig
from modelforge_cli.follow import follow_events
from modelforge_cli.render import FollowView, cell, print_json, stderr, stdout
from modelforge_cli.wsstream import websocket_connector

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer (for scripts).")]
YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def config_of(ctx: typer.Context) -> CliConfig:
    config = ctx.obj
    if not isinstance(config, CliConfig):  # only when a command module is invoked without the root app
        config = CliConfig()
    return config


def api(ctx: typer.Context) -> ApiClient:
    return ApiClient(config_of(ctx))


def fail(message: str) -> typer.Exit:
    """Prints one error line to stderr; returns the Exit(1) to raise."""
    stderr().print(f"error: {message}", markup=False)
    return typer.Exit(1)


def note(message: str) -> None:
    stderr().print(f"note: {message}", markup=False, style="dim")


def confirmed_delete(
    ctx: typer.Context, path: str, what: str, files: str, *, yes: bool, as_json: bool
) -> None:
    """Asks "delete {what} and {files}?" (unless --yes), DELETEs path and prints the answer's message
    (or the raw answer with --json)."""
    if not yes:
        typer.confirm(f"delete {what} and {files}?", abort=True)
    with api(ctx) as client:
        answer = client.delete(path)
    if as_json:
        print_json(answer)
        return
    message = answer.get("message") if isinstance(answer, dict) else None
    stdout().print(message or f"deleted {what}", markup=False)


def follow_job(ctx: typer.Context, job_id: str, as_json: bool) -> None:
    """Shows the job's events until it ends; returns (exit 0) when it completed, else exits 1."""
    config = config_of(ctx)
    with FollowView(job_id, stdout(), as_json=as_json) as view:
        final = asyncio.run(follow_events(websocket_connector(config, job_id), view, on_retry=view.retrying))
    status = final.get("status")
    if status != "completed":
        reason = final.get("error") or final.get("message") or "no reason given"
        raise fail(f"job {job_id} {status}: {reason}")
    if as_json:
        return
    metrics = final.get("metrics") or {}
    model_id = final.get("model_id")
    if model_id and not metrics:
        metrics = _model_metrics(config, str(model_id))
    out = stdout()
    out.print(f"[green]job {escape(job_id)} completed[/]: model [bold]{escape(str(model_id or '-'))}[/]")
    for name, value in metrics.items():
        out.print(f"  {name}: {cell(value)}", markup=False)


def _model_metrics(config: CliConfig, model_id: str) -> dict[str, Any]:
    """The registered model's metrics, when the completed event carried none (best effort)."""
    try:
        with ApiClient(config) as client:
            model = client.get(f"/api/models/{model_id}")
    except CliError:
        return {}
    metrics = model.get("metrics") if isinstance(model, dict) else None
    return metrics if isinstance(metrics, dict) else {}
