"""Request and response bodies of the dataset endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelforge_gateway.common.paths import HUB_REPO_NAME, HUB_REPO_NAME_MAX_LENGTH

MAPPING_DESCRIPTION = (
    'Format field -> the dataset\'s column it is read from, e.g. {"prompt": "question", "completion": "answer"}'
)

# Names as the Hub spells them: letters and digits joined by single separators (no "..").
_NAME = r"^[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*$"
_REVISION = r"^$|^[A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)*$"
# The fields a column mapping may map to (modelforge_common.dataset_rows.mappable_fields).
MappableField = Literal[
    "answers", "chosen", "completion", "context", "document", "input", "instruction", "messages", "output",
    "prompt", "question", "rejected", "summary", "text",
]  # fmt: skip


class HubDatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(
        max_length=HUB_REPO_NAME_MAX_LENGTH, pattern=HUB_REPO_NAME, description='A Hub dataset id, "name" or "org/name"'
    )
    config: str = Field(default="", max_length=64, pattern=rf"^$|{_NAME}", description="Config (subset) name")
    split: str = Field(default="train", min_length=1, max_length=64, pattern=_NAME)
    revision: str = Field(default="", max_length=200, pattern=_REVISION, description="Branch, tag or commit")
    column_mapping: dict[MappableField, Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]] = Field(
        default_factory=dict, description=MAPPING_DESCRIPTION
    )


class DatasetValidation(BaseModel):
    valid: bool
    errors: list[str]


class DatasetSummary(BaseModel):
    filename: str
    num_examples: int
    size_mb: float
    uploaded_at: str | None
    # The file's own columns, the format field -> column mapping it is read through ({} when its
    # rows have a known shape), and where it came from (format: jsonl, json, csv, parquet or hub;
    # the original file's name and sha256, or the Hub id, config, split, revision and commit sha).
    columns: list[str] = []
    column_mapping: dict[str, str] = {}
    source: dict[str, str] = {}


class UploadDatasetResponse(BaseModel):
    status: Literal["uploaded"] = "uploaded"
    filename: str
    num_examples: int
    validation: DatasetValidation


class HubDatasetResponse(UploadDatasetResponse):
    # What GET /api/datasets lists for it: its source holds the Hub revision and commit sha.
    dataset: DatasetSummary


class DatasetsResponse(BaseModel):
    datasets: list[DatasetSummary]


class DeleteDatasetResponse(BaseModel):
    success: bool = True
    status: Literal["deleted"] = "deleted"
    message: str
    filename: str


class TokenLengths(BaseModel):
    # A field of the rows, or "total": a whole row as the model sees it.
    field: str
    min: int
    p50: int
    p95: int
    max: int
    mean: float
    rows: int


class DatasetInsightResponse(BaseModel):
    dataset: str
    model_name: str
    rows: int
    max_length: int
    fields: list[TokenLengths]
    # Rows longer than max_length tokens: training truncates them.
    rows_over_max_length: int
    duplicate_rows: int
    # Field -> rows where it is missing or blank.
    empty_fields: dict[str, int]
    # The first rows as the model sees them (chat template applied when the tokenizer has one).
    samples: list[str]
    # Every row's total length in tokens, in row order (the console draws its histogram).
    total_lengths: list[int]
    chat_template: bool
