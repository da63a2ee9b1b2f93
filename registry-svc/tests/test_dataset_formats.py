"""CSV, JSON and Parquet uploads (stored as JSONL), column mappings, and Hub datasets from a cache
laid out as huggingface_hub lays it out (offline)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelforge_common.dataset_rows import load_rows, mapping_path
from modelforge_common.errors import InvalidArgument, NotFound, Unavailable
from modelforge_registry.app import Registry
from modelforge_registry.domain import DatasetInfo

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

QA = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(12)]
PAIRS = [{"prompt": row["question"], "completion": row["answer"]} for row in QA]
MAPPING = {"prompt": "question", "completion": "answer"}


async def chunked(content: bytes, size: int = 97) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def upload(registry: Registry, filename: str, content: bytes, mapping: dict[str, str] | None = None) -> DatasetInfo:
    return asyncio.run(registry.datasets.upload(filename, chunked(content), mapping))


def stored_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "datasets").iterdir())


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet_bytes(rows: list[dict[str, object]]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def refused(
    registry: Registry, filename: str, content: bytes, mapping: dict[str, str] | None = None
) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        upload(registry, filename, content, mapping)
    return info.value


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("pairs.csv", csv_bytes(PAIRS)),
        ("pairs.json", json.dumps(PAIRS).encode()),
        ("pairs.parquet", parquet_bytes(PAIRS)),  # type: ignore[arg-type]
    ],
)
def test_csv_json_and_parquet_are_stored_as_jsonl(
    registry: Registry, data_dir: Path, filename: str, content: bytes
) -> None:
    dataset = upload(registry, filename, content)
    assert dataset.filename == "pairs.jsonl"
    assert load_rows(dataset.path) == PAIRS
    assert dataset.sha256 == hashlib.sha256(dataset.path.read_bytes()).hexdigest()
    assert (dataset.num_examples, dataset.formats) == (12, ("prompt_completion",))
    assert dataset.source == {
        "format": filename.rsplit(".", 1)[1],
        "original_filename": filename,
        "original_sha256": hashlib.sha256(content).hexdigest(),
    }
    # The JSONL and, beside it, where it came from (for the lineage).
    assert stored_files(data_dir) == ["pairs.jsonl", "pairs.jsonl.source.json"]
    assert registry.datasets.get("pairs.jsonl") == dataset


def test_parquet_values_become_json_values(registry: Registry) -> None:
    rows = [{"prompt": f"p{i}", "completion": f"c{i}", "score": i / 2, "tags": ["a", str(i)]} for i in range(10)]
    dataset = upload(registry, "typed.parquet", parquet_bytes(rows))  # type: ignore[arg-type]
    assert load_rows(dataset.path) == rows


@pytest.mark.parametrize(
    ("filename", "content", "field", "message"),
    [
        # A ragged row: the 3rd data row (line 4) lacks its completion.
        ("ragged.csv", b"prompt,completion\na,b\nc,d\ne\n", "file/row 3/completion", "has 1 values but the header"),
        ("extra.csv", b"prompt,completion\na,b,c\n", "file/row 1/#3", "has 3 values but the header has 2"),
        ("nohead.csv", b"", "file", "the file is empty"),
        ("twice.csv", b"prompt,prompt\na,b\n", "file/prompt", "appears twice in the header"),
        ("latin.csv", b"prompt,completion\n\xe9,b\n", "file", "is not UTF-8 text"),
        ("fake.parquet", b'{"prompt": "a", "completion": "b"}\n' * 12, "file", "is not a Parquet file"),
        ("object.json", b'{"prompt": "a"}', "file", "must be a JSON array of row objects"),
        ("broken.json", b'[{"prompt": "a"', "file", "is not valid JSON"),
        ("mixed.json", json.dumps([*PAIRS, 3]).encode(), "file/row 13", "must be a JSON object, got int"),
        # Rows that convert but break the shared row rules name their row and field.
        ("empty.csv", csv_bytes([*PAIRS, {"prompt": "x", "completion": ""}]), "file/row 13/completion",
         "must not be empty"),
        ("nan.parquet", parquet_bytes([{"prompt": "a", "completion": "b", "x": float("nan")}]), "file/row 1/x", "nan"),
    ],
)
def test_bad_tables_are_refused_naming_row_and_column(
    registry: Registry, data_dir: Path, filename: str, content: bytes, field: str, message: str
) -> None:
    error = refused(registry, filename, content)
    assert error.message.startswith("Dataset validation failed: ")
    assert [v.field for v in error.violations][:1] == [field]
    assert message in error.violations[0].description
    assert stored_files(data_dir) == []
    assert registry.datasets.list() == []


def test_a_mapped_dataset_reads_as_its_format(registry: Registry, data_dir: Path) -> None:
    dataset = upload(registry, "qa.csv", csv_bytes(QA), MAPPING)
    assert dataset.column_mapping == MAPPING
    assert dataset.fields == ("answer", "question")
    assert dataset.formats == ("prompt_completion",)
    assert json.loads(mapping_path(dataset.path).read_text()) == MAPPING
    # What the trainer's worker loads: the mapped rows.
    assert load_rows(dataset.path) == PAIRS
    assert registry.datasets.list()[0].column_mapping == MAPPING
    registry.datasets.delete("qa.jsonl")
    assert stored_files(data_dir) == []


def test_without_a_mapping_unknown_columns_are_refused(registry: Registry) -> None:
    error = refused(registry, "qa.csv", csv_bytes(QA))
    assert error.violations[0].field == "file/row 1"
    assert "expected one of" in error.violations[0].description


def test_a_mapping_to_a_missing_column_is_refused_naming_it(registry: Registry, data_dir: Path) -> None:
    error = refused(registry, "qa.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in QA),
                    {"prompt": "question", "completion": "answr"})
    assert error.violations[0].field == "file/line 1/answr"
    assert error.violations[0].description == "has no column 'answr' (mapped to completion)"
    assert stored_files(data_dir) == []


@pytest.mark.parametrize(
    ("mapping", "field"),
    [({"prompt": "question", "reply": "answer"}, "column_mapping/reply"), ({"prompt": " "}, "column_mapping/prompt")],
)
def test_a_mapping_to_an_unknown_field_is_refused(registry: Registry, mapping: dict[str, str], field: str) -> None:
    error = refused(registry, "qa.csv", csv_bytes(QA), mapping)
    assert [v.field for v in error.violations] == [field]


# -- Hub datasets from a cache folder laid out as huggingface_hub's (read offline) -------------

SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """<root>/datasets--org--name/{refs/<ref>, snapshots/<sha>/<files>} as snapshot_download leaves it."""
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / ref).write_text(SHA)
    for name, content in files.items():
        path = repo / "snapshots" / SHA / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("MODELFORGE_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_hub_split_registers_from_the_cache_with_its_sha(registry: Registry, offline_hub: Path) -> None:
    half = len(QA) // 2
    hub_cache(offline_hub, "org/qa", {
        "data/train-00000-of-00002.parquet": parquet_bytes(QA[:half]),  # type: ignore[arg-type]
        "data/train-00001-of-00002.parquet": parquet_bytes(QA[half:]),  # type: ignore[arg-type]
        "data/test-00000-of-00001.parquet": parquet_bytes(QA[:2]),  # type: ignore[arg-type]
        "README.md": b"# qa",
    })
    dataset = registry.datasets.register_hub("org/qa", "", "train", "", MAPPING)
    assert dataset.filename == "org__qa-train.jsonl"
    assert load_rows(dataset.path) == PAIRS
    assert dataset.source == {
        "format": "hub", "hub_id": "org/qa", "hub_config": "", "hub_split": "train",
        "hub_revision": "main", "hub_sha": SHA,
    }
    # A pinned commit reads the same snapshot.
    again = registry.datasets.register_hub("org/qa", "", "train", SHA, MAPPING)
    assert again.filename == "org__qa-train-2.jsonl" and again.source["hub_sha"] == SHA


def test_a_hub_config_folder_and_jsonl_split(registry: Registry, offline_hub: Path) -> None:
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in PAIRS)
    hub_cache(offline_hub, "org/multi", {"easy/train.jsonl": lines, "hard/train.jsonl": b"{}\n"})
    dataset = registry.datasets.register_hub("org/multi", "easy", "train", "")
    assert (dataset.filename, dataset.num_examples) == ("org__multi-easy-train.jsonl", 12)
    with pytest.raises(NotFound, match="no config 'medium'"):
        registry.datasets.register_hub("org/multi", "medium", "train", "")
    with pytest.raises(NotFound, match="no data files for split 'validation'"):
        registry.datasets.register_hub("org/multi", "easy", "validation", "")
    with pytest.raises(InvalidArgument) as info:
        registry.datasets.register_hub("org/multi", "hard", "train", "")
    assert info.value.violations[0].field.startswith("file/row 1")


def test_a_hub_dataset_not_cached_while_offline_is_unavailable(
    registry: Registry, offline_hub: Path, data_dir: Path
) -> None:
    with pytest.raises(Unavailable, match="cannot be reached"):
        registry.datasets.register_hub("org/elsewhere", "", "train", "")
    with pytest.raises(InvalidArgument) as info:
        registry.datasets.register_hub("../etc", "", "train", "")
    assert [v.field for v in info.value.violations] == ["repo_id"]
    assert stored_files(data_dir) == []


def test_the_origin_is_stored_beside_the_file_for_the_lineage(registry: Registry, data_dir: Path) -> None:
    from modelforge_common.dataset_rows import dataset_origin

    mapped = upload(registry, "qa.csv", csv_bytes(QA), MAPPING)
    assert dataset_origin(mapped.path) == {"column_mapping": MAPPING, "source": mapped.source}
    plain = upload(registry, "plain.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in PAIRS))
    assert dataset_origin(plain.path) == {}
    assert stored_files(data_dir) == ["plain.jsonl", "qa.jsonl", "qa.jsonl.columns.json", "qa.jsonl.source.json"]
    registry.datasets.delete("qa.jsonl")
    assert stored_files(data_dir) == ["plain.jsonl"]


def test_a_long_csv_cell_is_a_long_text(tmp_path: Path, database_url: str) -> None:
    """(database_url: this module's parametrization; the reader needs no database.)"""
    from modelforge_registry.tables import table_rows

    # Over the csv module's default 128 KiB field limit (and the test registry's upload cap).
    path = tmp_path / "long.csv"
    path.write_bytes(csv_bytes([{"prompt": "x" * 200_000, "completion": "c"}]))
    assert list(table_rows(path, "csv")) == [{"prompt": "x" * 200_000, "completion": "c"}]
