"""`modelforge models list | show | compare | delete | push`."""

from __future__ import annotations

from typing import Annotated

import typer

from modelforge_cli.client import CliError, items_of
from modelforge_cli.commands._common import JsonFlag, YesFlag, api, confirmed_delete
from modelforge_cli.render import cell, fields_table, print_json, stdout, table

app = typer.Typer(help="Fine-tuned models in the registry.", no_args_is_help=True)

ModelId = Annotated[str, typer.Argument(help="The model's id or model_id.")]
COLUMNS = [
    ("id", "id"),
    ("model_id", "model_id"),
    ("name", "name"),
    ("base_model", "base model"),
    ("task", "task"),
    ("strategy", "strategy"),
    ("size_mb", "MB"),
    ("created_at", "created"),
]
NESTED = ("config", "training_params", "metrics")


@app.command("list")
def list_models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """All fine-tuned models."""
    with api(ctx) as client:
        answer = client.get("/api/models")
    if as_json:
        print_json(answer)
        return
    models = items_of(answer, "models")
    if not models:
        stdout().print("no models yet: modelforge train ... --follow")
        return
    stdout().print(table(models, COLUMNS))


@app.command()
def show(ctx: typer.Context, model_id: ModelId, as_json: JsonFlag = False) -> None:
    """One model's details, configuration and metrics."""
    with api(ctx) as client:
        model = client.get(f"/api/models/{model_id}")
    if as_json:
        print_json(model)
        return
    model = model if isinstance(model, dict) else {}
    out = stdout()
    out.print(fields_table(model, title=f"Model {model.get('model_id', model_id)}", skip=NESTED))
    for key in NESTED:
        if isinstance(model.get(key), dict) and model[key]:
            out.print(fields_table(model[key], title=key.replace("_", " ")))


@app.command()
def delete(
    ctx: typer.Context,
    model_id: ModelId,
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a model and its files."""
    confirmed_delete(ctx, f"/api/models/{model_id}", f"model {model_id}", "its files", yes=yes, as_json=as_json)


@app.command()
def push(
    ctx: typer.Context,
    model_id: ModelId,
    repo: Annotated[str, typer.Option("--repo", "-r", help="Hub repository, user/name.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Push a model to the Hugging Face Hub."""
    with api(ctx) as client:
        answer = client.post("/api/hub/push", json={"model_id": model_id, "repo_name": repo, "private": private})
    if as_json:
        print_json(answer)
        return
    answer = answer if isinstance(answer, dict) else {}
    stdout().print(f"{answer.get('message') or 'pushed'}: {answer.get('repo_url') or repo}", markup=False)


@app.command()
def compare(
    ctx: typer.Context,
    model_ids: Annotated[list[str], typer.Argument(help="Two to five model ids or model_ids.")],
    show_all: Annotated[bool, typer.Option("--all", help="Every setting, not only those that differ.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Models side by side: the settings that differ, final metrics and loss at each model's last step."""
    if not 2 <= len(model_ids) <= 5:
        raise CliError(f"compare takes two to five models, got {len(model_ids)}")
    with api(ctx) as client:
        answer = client.get("/api/compare", params=[("model", model_id) for model_id in model_ids])
    if as_json:
        print_json(answer)
        return
    answer = answer if isinstance(answer, dict) else {}
    models = items_of(answer, "models")
    names = [f"{m.get('name')} ({m.get('id')})" for m in models]
    columns = [("setting", "setting"), *((str(i), name) for i, name in enumerate(names))]
    rows = [
        {"setting": row.get("name"), **{str(i): value for i, value in enumerate(row.get("values") or [])}}
        for row in items_of(answer, "settings")
        if show_all or row.get("differs")
    ]
    out = stdout()
    if rows:
        out.print(table(rows, columns, title="Settings" if show_all else "Settings that differ"))
    else:
        out.print("the models were trained with the same settings", markup=False)
    metric_names = list(dict.fromkeys(k for m in models for k in (m.get("metrics") or {})))
    metric_rows = [
        {"setting": name, **{str(i): (m.get("metrics") or {}).get(name) for i, m in enumerate(models)}}
        for name in metric_names
    ]
    curves = [m.get("loss_curve") or [] for m in models]
    metric_rows.append({"setting": "steps logged", **{str(i): len(c) for i, c in enumerate(curves)}})
    metric_rows.append(
        {"setting": "last logged loss", **{str(i): c[-1].get("loss") if c else None for i, c in enumerate(curves)}}
    )
    out.print(table(metric_rows, columns, title="Metrics"))
    links = [(name, m.get("tracking_url")) for name, m in zip(names, models, strict=True) if m.get("tracking_url")]
    for name, link in links:
        out.print(f"{name}: {cell(link)}", markup=False)
