"""DatasetStore against SQLite and PostgreSQL: streamed uploads, validation, naming, resolution."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelforge_common.dataset_rows import RowIssue
from modelforge_common.errors import InvalidArgument, NotFound, ResourceExhausted
from modelforge_registry.app import Registry
from modelforge_registry.dataset_checks import issue_field, sanitize_filename
from modelforge_registry.domain import DatasetInfo

# Filesystem logic only: the database plays no part, so SQLite is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def chunked(content: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def upload(registry: Registry, filename: str, content: bytes) -> DatasetInfo:
    return asyncio.run(registry.datasets.upload(filename, chunked(content)))


def stored_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "datasets").iterdir())


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("data.jsonl", "data.jsonl"),
        ("../../etc/data.jsonl", "data.jsonl"),
        ("C:\\Users\\me\\my data.jsonl", "my_data.jsonl"),
        ("..hidden.jsonl", "hidden.jsonl"),
        ("ünï code.JSONL", "_n_code.jsonl"),
        ("table.CSV", "table.jsonl"),
        ("rows.parquet", "rows.jsonl"),
        ("array.json", "array.jsonl"),
    ],
)
def test_filenames_are_sanitized(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


@pytest.mark.parametrize(
    "raw", ["", "   ", "data.txt", "data.xlsx", ".jsonl", ".csv", "dir/", "-.jsonl", "data.jsonl.exe", "_.parquet"]
)
def test_filenames_without_a_dataset_name_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        sanitize_filename(raw)
    assert [v.field for v in info.value.violations] == ["file"]


def test_issue_fields_name_file_line_and_field() -> None:
    assert issue_field(RowIssue(0, "", "the file is empty")) == "file"
    assert issue_field(RowIssue(3, "", "not valid JSON")) == "file/line 3"
    assert issue_field(RowIssue(4, "messages[0].role", "bad")) == "file/line 4/messages[0].role"


def test_a_valid_upload_is_stored_and_counted(registry: Registry, valid_jsonl: bytes, data_dir: Path) -> None:
    dataset = upload(registry, "train.jsonl", valid_jsonl)
    assert dataset.filename == "train.jsonl"
    assert dataset.path == (data_dir / "datasets" / "train.jsonl").resolve()
    assert dataset.path.read_bytes() == valid_jsonl
    assert (dataset.num_examples, dataset.size_bytes) == (12, len(valid_jsonl))
    assert dataset.sha256 == hashlib.sha256(valid_jsonl).hexdigest()
    assert (dataset.fields, dataset.formats) == (("completion", "prompt"), ("prompt_completion",))
    assert dataset.uploaded_at is not None and dataset.valid
    assert stored_files(data_dir) == ["train.jsonl"]
    assert registry.datasets.list() == [dataset]


def test_a_taken_filename_gets_a_new_name(registry: Registry, valid_jsonl: bytes, data_dir: Path) -> None:
    first = upload(registry, "data.jsonl", valid_jsonl)
    second = upload(registry, "data.jsonl", valid_jsonl + b"\n")
    # A file placed there by hand is not overwritten either.
    (data_dir / "datasets" / "data-3.jsonl").write_bytes(b"by hand")
    third = upload(registry, "data.jsonl", valid_jsonl)
    assert [first.filename, second.filename, third.filename] == ["data.jsonl", "data-2.jsonl", "data-4.jsonl"]
    assert first.path.read_bytes() == valid_jsonl
    assert (data_dir / "datasets" / "data-3.jsonl").read_bytes() == b"by hand"
    assert [d.filename for d in registry.datasets.list()] == ["data-4.jsonl", "data-2.jsonl", "data.jsonl"]


def test_concurrent_uploads_of_one_name_all_get_stored(registry: Registry, valid_jsonl: bytes) -> None:
    async def upload_four() -> list[DatasetInfo]:
        return list(await asyncio.gather(
            *(registry.datasets.upload("same.jsonl", chunked(valid_jsonl, 64)) for _ in range(4))))

    names = sorted(d.filename for d in asyncio.run(upload_four()))
    assert names == ["same-2.jsonl", "same-3.jsonl", "same-4.jsonl", "same.jsonl"]


@sqlite_only
@pytest.mark.parametrize(
    ("content", "fields"),
    [
        (b"", ["file"]),
        (b"\n  \n", ["file"]),
        (b"this is not json\n", ["file/line 1"]),
        (b'{"prompt": "a", "completion": "b"}\n[1, 2]\n"text"\n', ["file/line 2", "file/line 3"]),
        (b'{"prompt": "a", "completion": ""}\n', ["file/line 1/completion"]),
        (b'{"prompt": "a", "completion": "b"}\n' * 3, ["file"]),
        (b"\xff\xfe\n", ["file/line 1"]),
    ],
)
def test_invalid_uploads_store_nothing(registry: Registry, data_dir: Path, content: bytes, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as info:
        upload(registry, "bad.jsonl", content)
    assert info.value.message.startswith("Dataset validation failed: ")
    assert [v.field for v in info.value.violations] == fields
    assert stored_files(data_dir) == []
    assert registry.datasets.list() == []


@sqlite_only
def test_an_upload_over_the_limit_is_refused(registry: Registry, data_dir: Path) -> None:
    with pytest.raises(ResourceExhausted, match=r"^Dataset exceeds the upload limit of 65536 bytes$"):
        content = b'{"prompt": "a", "completion": "b"}\n' * 3000
        asyncio.run(registry.datasets.upload("big.jsonl", chunked(content, 4096)))
    assert stored_files(data_dir) == []


def test_get_by_filename_and_by_path(registry: Registry, valid_jsonl: bytes, data_dir: Path) -> None:
    dataset = upload(registry, "train.jsonl", valid_jsonl)
    assert registry.datasets.get("train.jsonl") == dataset
    assert registry.datasets.get("datasets/train.jsonl") == dataset
    assert registry.datasets.get(str(dataset.path)) == dataset


@sqlite_only
def test_get_inspects_a_file_placed_in_the_data_dir(registry: Registry, valid_jsonl: bytes, data_dir: Path) -> None:
    (data_dir / "mine").mkdir()
    (data_dir / "mine" / "good.jsonl").write_bytes(valid_jsonl)
    (data_dir / "datasets" / "bad.jsonl").write_bytes(b'{"prompt": 1, "completion": "x"}\n')

    good = registry.datasets.get("mine/good.jsonl")
    assert (good.valid, good.num_examples, good.uploaded_at) == (True, 12, None)
    assert good.sha256 == hashlib.sha256(valid_jsonl).hexdigest()
    bad = registry.datasets.get("bad.jsonl")
    assert not bad.valid
    assert bad.issues == (RowIssue(1, "prompt", "must be a string, got int"),)
    assert registry.datasets.list() == []


@sqlite_only
@pytest.mark.parametrize(
    "name", ["../outside.jsonl", "datasets/../../outside.jsonl", "..", "escape.jsonl", "/etc/passwd", "a\x00.jsonl"])
def test_get_refuses_paths_outside_the_data_dir(registry: Registry, data_dir: Path, tmp_path: Path, name: str) -> None:
    (tmp_path / "outside.jsonl").write_text("{}\n")
    (data_dir / "datasets" / "escape.jsonl").symlink_to(tmp_path / "outside.jsonl")
    with pytest.raises(InvalidArgument) as info:
        registry.datasets.get(name)
    assert [v.field for v in info.value.violations] == ["dataset"]


@pytest.mark.parametrize("name", ["missing.jsonl", "datasets/missing.jsonl", "datasets", "x" * 300 + ".jsonl"])
def test_get_unknown_dataset_is_not_found(registry: Registry, name: str) -> None:
    with pytest.raises(NotFound) as info:
        registry.datasets.get(name)
    assert info.value.message == f"Dataset {name} not found"


@sqlite_only
def test_recover_removes_stale_partial_uploads(registry: Registry, data_dir: Path) -> None:
    stale = data_dir / "datasets" / ".upload-abc.part"
    fresh = data_dir / "datasets" / ".upload-def.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    registry.datasets.recover(grace_s=3600)
    assert stored_files(data_dir) == [".upload-def.part"]


@sqlite_only
def test_uploads_work_where_hard_links_do_not(
    registry: Registry, valid_jsonl: bytes, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    first = upload(registry, "data.jsonl", valid_jsonl)
    second = upload(registry, "data.jsonl", valid_jsonl)
    assert [first.filename, second.filename] == ["data.jsonl", "data-2.jsonl"]
    assert first.path.read_bytes() == second.path.read_bytes() == valid_jsonl
    assert stored_files(data_dir) == ["data-2.jsonl", "data.jsonl"]
