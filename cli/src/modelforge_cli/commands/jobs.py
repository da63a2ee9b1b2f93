"""`modelforge jobs list | show | follow | stop`.

Uses GET /api/jobs, GET /api/jobs/{id} and POST /api/jobs/{id}/cancel where the gateway has them;
otherwise falls back to the single-job endpoints (/api/training_status, POST /api/stop_training)
and says so on stderr.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelforge_cli.client import ApiClient, ApiError, CliError, items_of
from modelforge_cli.commands._common import JsonFlag, api, follow_job, note
from modelforge_cli.commands.system import JOB_COLUMNS
from modelforge_cli.render import fields_table, print_json, stdout, table

app = typer.Typer(help="Training jobs: list, inspect, follow, stop.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The job id `train` printed.")]
FALLBACK_NOTE = "this gateway has no {missing}: using {used} instead"


def _current_job(client: ApiClient, job_id: str | None, missing_path: str) -> dict[str, Any]:
    """The job from /api/training_status (`?job_id=` names one; without it, the current job).
    Refuses an answer about another job (a gateway that ignores the query)."""
    note(FALLBACK_NOTE.format(missing=missing_path, used="GET /api/training_status"))
    current = client.get("/api/training_status", params={"job_id": job_id} if job_id else None)
    current = current if isinstance(current, dict) else {}
    current_id = current.get("job_id")
    if job_id is not None and current_id and str(current_id) != job_id:
        raise CliError(
            f"job {job_id} is not the current job ({current_id}), and without {missing_path} "
            "this gateway only answers for the current one"
        )
    return current


def _flatten(job: dict[str, Any]) -> dict[str, Any]:
    config = given if isinstance(given := job.get("config"), dict) else {}
    return {**job, "model_name": job.get("model_name") or config.get("model_name")}


@app.command("list")
def list_jobs(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Queued, running and finished jobs."""
    with api(ctx) as client:
        try:
            answer = client.get("/api/jobs")
            jobs = items_of(answer, "jobs")
        except ApiError as exc:
            if not exc.route_missing:
                raise
            answer = _current_job(client, None, "GET /api/jobs")
            jobs = [answer]
    if as_json:
        print_json(answer)
    elif jobs:
        stdout().print(table([_flatten(job) for job in jobs], JOB_COLUMNS))
    else:
        stdout().print("no jobs")


@app.command()
def show(ctx: typer.Context, job_id: JobId, as_json: JsonFlag = False) -> None:
    """One job's status, progress and configuration."""
    with api(ctx) as client:
        try:
            job = client.get(f"/api/jobs/{job_id}")
        except ApiError as exc:
            if not exc.route_missing:
                raise
            job = _current_job(client, job_id, "GET /api/jobs/{id}")
    if as_json:
        print_json(job)
        return
    job = job if isinstance(job, dict) else {}
    out = stdout()
    out.print(fields_table(job, title=f"Job {job.get('job_id', job_id)}", skip=("config",)))
    if isinstance(job.get("config"), dict):
        out.print(fields_table(job["config"], title="Configuration"))


@app.command()
def follow(ctx: typer.Context, job_id: JobId, as_json: JsonFlag = False) -> None:
    """Live progress until the job ends: exit 0 when it completes, 1 when it fails or is stopped.
    With --json, one event per line."""
    follow_job(ctx, job_id, as_json)


@app.command()
def stop(ctx: typer.Context, job_id: JobId, as_json: JsonFlag = False) -> None:
    """Ask the gateway to stop a queued or running job."""
    with api(ctx) as client:
        path = f"/api/jobs/{job_id}/cancel"
        try:
            answer = client.post(path)
        except ApiError as exc:
            if not exc.route_missing:
                raise
            _current_job(client, job_id, "POST /api/jobs/{id}/cancel")
            path = "/api/stop_training"
            answer = client.post(path, params={"job_id": job_id})
    if as_json:
        print_json(answer)
        return
    message = answer.get("message") if isinstance(answer, dict) else None
    stdout().print(f"stop requested for job {job_id} (POST {path}): {message or answer}", markup=False)
