"""What the registry stores, as plain values the servicer converts to protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelforge.v1 import registry_pb2
from modelforge_common.dataset_rows import RowIssue


@dataclass(frozen=True)
class NewModel:
    """A model to register; empty size_mb / file_sha256 are computed from the folder."""

    path: str
    name: str = ""
    base_model: str = ""
    task: str = ""
    strategy: str = ""
    provider: str = ""
    size_mb: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    training_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    job_id: str = ""
    adapter_type: str = ""
    file_sha256: dict[str, str] = field(default_factory=dict)
    # The Lineage message as a JSON object (proto field names); None when there is none.
    lineage: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelInfo:
    id: int
    model_id: str
    name: str
    base_model: str
    task: str
    strategy: str
    provider: str
    created_at: datetime
    size_mb: float
    path: Path
    config: dict[str, Any]
    training_params: dict[str, Any]
    metrics: dict[str, float]
    job_id: str
    adapter_type: str
    file_sha256: dict[str, str]
    # Final status of the job that produced it ("" when not trained here).
    status: str = ""
    lineage: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelFilter:
    """GET /api/models filters; empty strings match everything, limit 0 means no limit."""

    task: str = ""
    base_model: str = ""
    strategy: str = ""
    provider: str = ""
    status: str = ""
    limit: int = 0
    offset: int = 0
    # False: summaries (no config, file digests or lineage, which a listing never shows).
    full: bool = False


@dataclass(frozen=True)
class ModelPage:
    models: tuple[ModelInfo, ...]
    # Every match, not only this page.
    total: int


@dataclass(frozen=True)
class DatasetInfo:
    filename: str
    path: Path
    size_bytes: int
    num_examples: int
    sha256: str
    fields: tuple[str, ...]
    formats: tuple[str, ...]
    # None for a file inside the data dir that was placed there rather than uploaded.
    uploaded_at: datetime | None
    valid: bool = True
    issues: tuple[RowIssue, ...] = ()
    # Format field -> the dataset's column it is read from.
    column_mapping: dict[str, str] = field(default_factory=dict)
    # Where the rows came from: format (jsonl, json, csv, parquet, hub) and its details.
    source: dict[str, str] = field(default_factory=dict)


JOB_STATUSES = ("queued", "running", "registering", "completed", "error", "stopped")
# A job in any other state may still write or register its model folder (models/<job_id>).
TERMINAL_JOB_STATUSES = ("completed", "error", "stopped")
# Jobs that hold a training slot somewhere (ListJobs with in_progress_first lists them first).
IN_PROGRESS_JOB_STATUSES = tuple(status for status in JOB_STATUSES if status not in TERMINAL_JOB_STATUSES)


@dataclass(frozen=True)
class JobPage:
    # The proto Job is the job record itself: the store reads and writes it, the servicer sends it.
    jobs: tuple[registry_pb2.Job, ...]
    # Every match, not only this page.
    total: int
