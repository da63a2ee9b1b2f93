"""`modelforge datasets upload | hub | list | show | inspect | delete`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from modelforge_cli.client import ApiError, CliError, items_of
from modelforge_cli.commands._common import JsonFlag, YesFlag, api, confirmed_delete
from modelforge_cli.render import fields_table, print_json, stderr, stdout, table

app = typer.Typer(
    help="Upload and inspect training datasets (JSONL, JSON, CSV, Parquet, or a Hub dataset).", no_args_is_help=True
)

COLUMNS = [
    ("filename", "filename"),
    ("num_examples", "examples"),
    ("size_mb", "MB"),
    ("uploaded_at", "uploaded"),
    ("column_mapping", "mapping"),
]
PREVIEW_CHARS = 60

MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="FIELD=COLUMN: read a format field from a column of another name (e.g. --map prompt=question "
        "--map completion=answer); repeat per field.",
    ),
]


def parse_mapping(entries: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in entries or []:
        field_name, sep, column = entry.partition("=")
        if not sep or not field_name.strip() or not column.strip():
            raise CliError(f"--map {entry!r}: expected FIELD=COLUMN, e.g. --map prompt=question")
        mapping[field_name.strip()] = column.strip()
    return mapping


@app.command()
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="A .jsonl, .json, .csv or .parquet dataset."),
    ],
    mapping: MapOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload FILE (stored as JSONL); every problem the server finds is printed, one per line."""
    columns = parse_mapping(mapping)
    data = {"column_mapping": json.dumps(columns)} if columns else None
    with api(ctx) as client, file.open("rb") as handle:
        try:
            answer = client.post(
                "/api/upload_dataset", files={"file": (file.name, handle, "application/octet-stream")}, data=data
            )
        except ApiError as exc:
            if exc.status not in (400, 413, 422):
                raise
            _report_problems(exc.lines()[0], exc.problems)
            raise typer.Exit(1) from exc
    answer = answer if isinstance(answer, dict) else {}
    validation = given if isinstance(given := answer.get("validation"), dict) else {}
    if as_json:
        print_json(answer)
    if validation.get("valid") is False:
        problems = [str(problem) for problem in validation.get("errors") or []]
        _report_problems(f"error: {file.name} was stored but is not valid", problems)
        raise typer.Exit(1)
    if not as_json:
        name = answer.get("filename", file.name)
        stdout().print(
            f"uploaded [bold]{escape(name)}[/]: {answer.get('num_examples', '?')} examples\n"
            f"train on it with: modelforge train --dataset {escape(name)} ..."
        )


@app.command()
def hub(
    ctx: typer.Context,
    repo_id: Annotated[str, typer.Argument(help="A Hub dataset id, e.g. org/name.")],
    split: Annotated[str, typer.Option(help="The split to store.")] = "train",
    config: Annotated[str, typer.Option(help="The config (subset), when the dataset has several.")] = "",
    revision: Annotated[str, typer.Option(help="Branch, tag or commit (default: main).")] = "",
    mapping: MapOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Store one split of a Hub dataset (fetched once by the server; its commit sha is recorded)."""
    body = {
        "repo_id": repo_id, "split": split, "config": config, "revision": revision,
        "column_mapping": parse_mapping(mapping),
    }
    with api(ctx) as client:
        try:
            answer = client.post("/api/hub/datasets", json=body)
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            _report_problems(exc.lines()[0], exc.problems)
            raise typer.Exit(1) from exc
    if as_json:
        print_json(answer)
        return
    answer = answer if isinstance(answer, dict) else {}
    source = (answer.get("dataset") or {}).get("source") or {}
    name = answer.get("filename", "?")
    stdout().print(
        f"stored [bold]{escape(name)}[/]: {answer.get('num_examples', '?')} examples from "
        f"{escape(repo_id)}@{escape(str(source.get('hub_sha', '?')))}\n"
        f"train on it with: modelforge train --dataset {escape(name)} ..."
    )


@app.command()
def inspect(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The uploaded filename.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The base model whose tokenizer counts.")],
    max_length: Annotated[int, typer.Option(min=1, help="Tokens a row may have before truncation.")] = 2048,
    samples: Annotated[int, typer.Option(min=1, max=20, help="Rows to show as the model sees them.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Token lengths per field, rows over --max-length, duplicates, empty fields and sample rows."""
    with api(ctx) as client:
        answer = client.get(
            f"/api/datasets/{quote(name, safe='')}/insight",
            params={"model": model, "max_length": max_length, "sample_size": samples},
        )
    if as_json:
        print_json(answer)
        return
    answer = answer if isinstance(answer, dict) else {}
    out = stdout()
    columns = [("field", "field"), ("min", "min"), ("p50", "p50"), ("p95", "p95"), ("max", "max"), ("mean", "mean")]
    out.print(table(items_of(answer, "fields"), columns, title=f"Tokens per row of {name} ({model})"))
    rows = answer.get("rows", 0)
    out.print(
        f"{answer.get('rows_over_max_length', 0)} of {rows} rows are over {answer.get('max_length')} tokens "
        f"(truncated in training); {answer.get('duplicate_rows', 0)} duplicate rows",
        markup=False,
    )
    for field_name, count in (answer.get("empty_fields") or {}).items():
        out.print(f"{count} rows with an empty {field_name}", markup=False)
    template = "chat template applied" if answer.get("chat_template") else "no chat template: plain format"
    for index, sample in enumerate(answer.get("samples") or [], start=1):
        out.print(f"--- row {index} as the model sees it ({template})", markup=False)
        out.print(str(sample), markup=False)


def _report_problems(headline: str, problems: list[str]) -> None:
    err = stderr()
    err.print(f"{headline} ({len(problems)} problem{'s' if len(problems) != 1 else ''})", markup=False)
    for problem in problems:
        err.print(f"  {problem}", markup=False)


@app.command("list")
def list_datasets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List uploaded datasets."""
    with api(ctx) as client:
        answer = client.get("/api/datasets")
    if as_json:
        print_json(answer)
        return
    datasets = items_of(answer, "datasets")
    if not datasets:
        stdout().print("no datasets uploaded yet: modelforge datasets upload FILE")
        return
    stdout().print(table(datasets, COLUMNS))


@app.command()
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The uploaded filename.")],
    yes: YesFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete an uploaded dataset and its file (refused while a queued or running job uses it)."""
    path = f"/api/datasets/{quote(name, safe='')}"
    confirmed_delete(ctx, path, f"dataset {name}", "its file", yes=yes, as_json=as_json)


@app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The uploaded filename (or a local file to preview).")],
    rows: Annotated[int, typer.Option(min=0, help="How many rows to preview from a local file.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """A dataset's listing entry, plus its first rows when the file is readable here."""
    with api(ctx) as client:
        datasets = items_of(client.get("/api/datasets"), "datasets")
    entry = next((d for d in datasets if name in (d.get("filename"), d.get("name"), d.get("path"))), None)
    if entry is None:
        entry = next((d for d in datasets if d.get("filename") == Path(name).name), None)
    local = _local_file(name, entry)
    if entry is None and local is None:
        raise CliError(f"dataset {name} not found among the {len(datasets)} uploaded (GET /api/datasets)")
    preview = _preview(local, rows) if local is not None else None
    if as_json:
        print_json({"dataset": entry, "local_path": str(local) if local else None, "preview": preview})
        return
    out = stdout()
    if entry is not None:
        out.print(fields_table(entry, title=f"Dataset {entry.get('filename', name)}"))
    else:
        out.print(f"{name}: a local file, not uploaded (modelforge datasets upload {name})", markup=False)
    if preview is not None:
        out.print(
            table(
                [_shorten(row) for row in preview],
                [(key, key) for key in _keys(preview)],
                title=f"First {len(preview)} rows of {local}",
            )
        )


def _local_file(name: str, entry: dict[str, Any] | None) -> Path | None:
    for candidate in (name, (entry or {}).get("path")):
        if isinstance(candidate, str) and candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _preview(path: Path, limit: int) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if len(shown) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = {"(not JSON)": line.strip()}
            shown.append(row if isinstance(row, dict) else {"(value)": row})
    return shown


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _shorten(row: dict[str, Any]) -> dict[str, str]:
    shortened = {}
    for key, value in row.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shortened[key] = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return shortened
