"""Rows to convert into a stored JSONL dataset from a fetched Hub split (JSONL shards or tables),
and where the Hub is reached from (cache, token, offline)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from modelforge_common.dataset_lines import LineError, iter_rows
from modelforge_registry.files import DataDir
from modelforge_registry.hub import HubSplit
from modelforge_registry.tables import TableError, table_rows


def jsonl_rows(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Rows of JSONL files one after another (a Hub split in shards); TableError names the line."""
    for path in paths:
        with path.open("rb") as handle:
            try:
                for _, row in iter_rows(handle):
                    yield row
            except LineError as exc:
                raise TableError(exc.line, exc.field, f"{path.name} line {exc.line}: {exc.message}") from None


def hub_rows(split: HubSplit) -> Iterator[dict[str, Any]]:
    if split.fmt == "jsonl":
        yield from jsonl_rows(split.files)
        return
    for path in split.files:
        yield from table_rows(path, split.fmt)


def hub_settings(data_dir: DataDir) -> tuple[Path, str | None, bool]:
    """(cache folder, token, offline): MODELFORGE_HUB_CACHE (default <data dir>/hub), the server's
    read token (HF_TOKEN or HUGGING_FACE_HUB_TOKEN; MODELFORGE_HF_TOKEN is inference's push token)
    and huggingface_hub's own HF_HUB_OFFLINE."""
    cache = Path(os.environ.get("MODELFORGE_HUB_CACHE") or data_dir.root / "hub")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return cache, token, offline
