"""Issue 20 through the real processes, with a real MLflow tracking server (SQLite, on a free port):
CSV (column-mapped), Parquet and JSON uploads and a Hub-layout folder registered offline each train
end to end; bad uploads are 400s naming file, row and column and store nothing; every job's params,
series and eval metrics reach MLflow and its TensorBoard files read back with tensorboard's reader;
the comparison endpoint and `modelforge models compare`; dataset insight and `datasets inspect`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stack_api import gateway_client, model_of_job, running_stack, start_training, wait_training_end
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from modelforge_cli.main import app as cli_app
from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack
from modelforge_training.testing_mlflow import MlflowReader, mlflow_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROWS = 16
STEPS = 2
HUB_SHA = "89abcdef0123456789abcdef0123456789abcdef"
PAIRS = text_generation_rows(ROWS, seed=4, style="prompt_completion")
QA = [{"question": row["prompt"], "answer": row["completion"]} for row in PAIRS]


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def tracked_stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Any, tracking: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("tracked-stack")
    with running_stack({**stack_env_for(data_dir), "MODELFORGE_MLFLOW_URI": tracking}) as running:
        yield running


@pytest.fixture(scope="module")
def client(tracked_stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(tracked_stack, timeout=120) as http:
        yield http


def dataset_files(stack: Stack) -> list[str]:
    return sorted(p.name for p in (Path(stack.env["MODELFORGE_DATA_DIR"]) / "datasets").iterdir())


def upload(client: httpx.Client, name: str, content: bytes, mapping: dict[str, str] | None = None) -> httpx.Response:
    data = {"column_mapping": json.dumps(mapping)} if mapping else None
    return client.post("/api/upload_dataset", files={"file": (name, content)}, data=data)


def train(client: httpx.Client, model: Path, dataset: str, name: str, learning_rate: float) -> dict[str, Any]:
    body = {
        "task": "text-generation", "model_name": str(model), "provider": "huggingface", "strategy": "sft",
        "dataset": dataset, "num_train_epochs": 1, "per_device_train_batch_size": 2, "max_seq_length": 64,
        "learning_rate": learning_rate, "max_steps": STEPS, "logging_steps": 1, "name": name,
    }
    job_id = start_training(client, body)
    status = wait_training_end(client, job_id)
    assert status["status"] == "completed", status
    return model_of_job(client, job_id, str(model))


def test_bad_uploads_are_400_naming_file_row_and_column(client: httpx.Client, tracked_stack: Stack) -> None:
    before = dataset_files(tracked_stack)
    cases = [
        ("ragged.csv", b"prompt,completion\na,b\nc\n", None, ["body", "file", "row 2", "completion"]),
        ("fake.parquet", b'{"prompt": "a", "completion": "b"}\n', None, ["body", "file"]),
        ("qa.csv", csv_bytes(QA), {"prompt": "question", "completion": "answr"}, ["body", "file", "row 1", "answr"]),
    ]
    for name, content, mapping, loc in cases:
        response = upload(client, name, content, mapping)
        assert response.status_code == 400, response.text
        assert response.json()["detail"][0]["loc"] == loc, response.text
        assert name in response.json()["error"] or loc[-1] in response.text
    bad_mapping = client.post(
        "/api/upload_dataset", files={"file": ("qa.csv", csv_bytes(QA))}, data={"column_mapping": "[1]"}
    )
    assert bad_mapping.status_code == 400
    assert bad_mapping.json()["detail"][0]["loc"] == ["body", "column_mapping"]
    assert dataset_files(tracked_stack) == before
    # A Hub dataset that is neither cached nor reachable (the stack runs with HF_HUB_OFFLINE=1).
    offline = client.post("/api/hub/datasets", json={"repo_id": "org/not-cached", "split": "train"})
    assert offline.status_code == 503, offline.text
    assert "cannot be reached" in offline.text
    runner = CliRunner(env={"COLUMNS": "200", "MODELFORGE_URL": None, "MODELFORGE_API_KEY": None})
    url = tracked_stack.gateway_url
    cli_offline = runner.invoke(cli_app, ["--url", url, "datasets", "hub", "org/not-cached", "--split", "train"])
    assert cli_offline.exit_code == 1 and "cannot be reached" in cli_offline.output, cli_offline.output
    ragged = tracked_stack.env["MODELFORGE_DATA_DIR"] + "/ragged.csv"
    Path(ragged).write_bytes(b"prompt,completion\na,b\nc\n")
    cli_ragged = runner.invoke(cli_app, ["--url", url, "datasets", "upload", ragged, "--map", "prompt=prompt"])
    assert cli_ragged.exit_code == 1 and "row 2" in cli_ragged.output, cli_ragged.output
    assert dataset_files(tracked_stack) == before


def test_every_source_trains_and_is_tracked_and_compared(
    client: httpx.Client, tracked_stack: Stack, tracking: str, tiny_causal_model: Path
) -> None:
    # A Hub snapshot laid out as huggingface_hub's cache keeps it, in the registry's Hub cache.
    hub = Path(tracked_stack.env["MODELFORGE_DATA_DIR"]) / "hub" / "datasets--org--facts"
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text(HUB_SHA)
    (hub / "snapshots" / HUB_SHA / "data").mkdir(parents=True)
    (hub / "snapshots" / HUB_SHA / "data" / "train-00000-of-00001.parquet").write_bytes(parquet_bytes(QA))

    mapping = {"prompt": "question", "completion": "answer"}
    csv_upload = upload(client, "facts.csv", csv_bytes(QA), mapping)
    assert csv_upload.status_code == 200, csv_upload.text
    assert upload(client, "pairs.parquet", parquet_bytes(PAIRS)).status_code == 200
    chats = json.dumps(text_generation_rows(ROWS, seed=5)).encode()
    assert upload(client, "chats.json", chats).status_code == 200
    hub_body = {"repo_id": "org/facts", "split": "train", "column_mapping": mapping}
    registered = client.post("/api/hub/datasets", json=hub_body)
    assert registered.status_code == 200, registered.text
    assert registered.json()["dataset"]["source"] == {
        "format": "hub", "hub_id": "org/facts", "hub_split": "train", "hub_revision": "main", "hub_sha": HUB_SHA,
    }
    listed = {d["filename"]: d for d in client.get("/api/datasets").json()["datasets"]}
    assert listed["facts.jsonl"]["column_mapping"] == mapping
    assert listed["facts.jsonl"]["columns"] == ["answer", "question"]
    assert listed["facts.jsonl"]["source"]["format"] == "csv"
    assert listed["pairs.jsonl"]["source"]["format"] == "parquet"

    models = {}
    for index, dataset in enumerate(("facts.jsonl", "pairs.jsonl", "chats.jsonl", "org__facts-train.jsonl")):
        models[dataset] = train(client, tiny_causal_model, dataset, f"from-{index}", learning_rate=1e-3 * (index + 1))
    for dataset, details in models.items():
        assert details["lineage"]["dataset"]["filename"] == dataset
    # The lineage keeps where the rows came from and how they were read.
    hub_lineage = models["org__facts-train.jsonl"]["lineage"]["dataset"]
    assert hub_lineage["source"]["hub_sha"] == HUB_SHA and hub_lineage["source"]["hub_revision"] == "main"
    assert hub_lineage["column_mapping"] == mapping
    assert models["facts.jsonl"]["lineage"]["dataset"]["source"]["original_filename"] == "facts.csv"
    assert models["facts.jsonl"]["lineage"]["dataset"]["column_mapping"] == mapping
    assert models["chats.jsonl"]["lineage"]["dataset"]["source"]["format"] == "json"

    # MLflow: one finished run per job, with its settings, series and evaluation.
    reader = MlflowReader(tracking)
    runs = {run["info"]["run_name"]: run for run in reader.runs()}
    assert set(runs) == {"from-0", "from-1", "from-2", "from-3"}
    for index, details in enumerate(models.values()):
        run = runs[f"from-{index}"]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert float(params["learning_rate"]) == pytest.approx(1e-3 * (index + 1))
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["modelforge.job_id"] == details["job_id"]
        assert tags["modelforge.dataset_sha256"] == details["lineage"]["dataset"]["sha256"]
        losses = reader.history(run["info"]["run_id"], "train_loss")
        assert [step for step, _ in losses] == list(range(1, STEPS + 1))
        recorded = [point["loss"] for point in details["lineage"]["loss_curve"]]
        assert [loss for _, loss in losses] == pytest.approx(recorded)
        evaluated = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert evaluated["eval_final_loss"] == pytest.approx(details["metrics"]["final_loss"])
        # The model's details link to the run; TensorBoard files sit beside the job's log.
        assert details["config"]["tracking_url"].endswith(f"/runs/{run['info']['run_id']}")
        events = EventAccumulator(details["config"]["tensorboard_dir"])
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == list(range(1, STEPS + 1))
        assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(recorded)

    # Runs side by side.
    first, second = models["facts.jsonl"], models["pairs.jsonl"]
    compared = client.get("/api/compare", params=[("model", first["model_id"]), ("model", str(second["id"]))])
    assert compared.status_code == 200, compared.text
    body = compared.json()
    assert [m["model_id"] for m in body["models"]] == [first["model_id"], second["model_id"]]
    assert body["models"][0]["loss_curve"] == first["lineage"]["loss_curve"]
    assert body["models"][1]["tracking_url"] == second["config"]["tracking_url"]
    assert {"dataset", "dataset_sha256", "learning_rate"} <= set(body["differing"])
    assert "lora_r" not in body["differing"] and "max_steps" not in body["differing"]

    runner = CliRunner(env={"COLUMNS": "200", "MODELFORGE_URL": None, "MODELFORGE_API_KEY": None})
    url = tracked_stack.gateway_url
    shown = runner.invoke(cli_app, ["--url", url, "models", "compare", first["model_id"], second["model_id"]])
    assert shown.exit_code == 0, shown.output
    assert "learning_rate" in shown.stdout and "facts.jsonl" in shown.stdout and "pairs.jsonl" in shown.stdout
    alone = runner.invoke(cli_app, ["--url", url, "models", "compare", first["model_id"]])
    assert alone.exit_code == 1 and "two to five" in alone.output

    # Insight with the tiny model's tokenizer, over the mapped rows.
    insight = client.get(
        "/api/datasets/facts.jsonl/insight", params={"model": str(tiny_causal_model), "max_length": 16}
    )
    assert insight.status_code == 200, insight.text
    found = insight.json()
    assert found["rows"] == ROWS and len(found["total_lengths"]) == ROWS
    stats = {s["field"]: s for s in found["fields"]}
    assert set(stats) == {"prompt", "completion", "total"}
    assert stats["total"]["max"] == max(found["total_lengths"])
    assert found["rows_over_max_length"] == sum(1 for n in found["total_lengths"] if n > 16)
    assert found["chat_template"] and PAIRS[0]["prompt"] in found["samples"][0]
    inspected = runner.invoke(
        cli_app, ["--url", url, "datasets", "inspect", "facts.jsonl", "--model", str(tiny_causal_model)]
    )
    assert inspected.exit_code == 0, inspected.output
    assert "as the model sees it" in inspected.stdout
    unknown = client.get("/api/datasets/nope.jsonl/insight", params={"model": str(tiny_causal_model)})
    assert unknown.status_code == 404
