"""What an upload is stored as, and its problems as InvalidArgument naming the field.

An uploaded filename becomes a safe .jsonl name (`upload_name`; `name_candidates` for the next free
one), a column mapping is checked before anything is written, and a validation report or a
conversion error (modelforge_registry.tables) becomes one FieldViolation per problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from modelforge_common.dataset_rows import DatasetReport, RowIssue, mapping_problems
from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_registry.tables import TABLE_FORMATS, TableError, table_format

DATASET_SUFFIX = ".jsonl"
MAX_FILENAME_LENGTH = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_RENAMES = 10_000


_SUFFIXES = " or ".join(TABLE_FORMATS)


def upload_name(raw: str) -> tuple[str, str]:
    """(the name it is stored under, its format): the basename with only [A-Za-z0-9._-] (others
    become "_"), no leading dots, its .jsonl/.json/.csv/.parquet suffix replaced by .jsonl."""
    base = re.split(r"[\\/]", raw.strip())[-1]
    safe = _UNSAFE.sub("_", base).lstrip(".")
    if not safe:
        raise InvalidArgument("A dataset filename is required", [FieldViolation("file", "must not be empty")])
    fmt = table_format(safe)
    stem = safe[: -len(next(s for s, f in TABLE_FORMATS.items() if f == fmt))] if fmt else ""
    if fmt is None or not stem.strip("._-"):
        raise InvalidArgument(
            f"Dataset file {raw!r} must be a {_SUFFIXES.replace(' or ', ', ', 2)} file",
            [FieldViolation("file", f"must end in {_SUFFIXES.replace(' or ', ', ', 2)}")],
        )
    return stem[: MAX_FILENAME_LENGTH - len(DATASET_SUFFIX)] + DATASET_SUFFIX, fmt


def sanitize_filename(raw: str) -> str:
    """The name an upload is stored under (see `upload_name`)."""
    return upload_name(raw)[0]


def issue_field(issue: RowIssue, unit: str = "line") -> str:
    """"file" for the whole file, "file/line N" for a line, "file/line N/<field>" for a field
    (unit "row" for a CSV, JSON or Parquet upload, whose rows are not lines)."""
    if issue.line == 0:
        return "file"
    where = f"file/{unit} {issue.line}"
    return f"{where}/{issue.field}" if issue.field else where


def validation_error(report: DatasetReport, unit: str = "line") -> InvalidArgument:
    summary = report.summary() if unit == "line" else report.summary().replace("line ", f"{unit} ")
    return InvalidArgument(
        f"Dataset validation failed: {summary}",
        [FieldViolation(issue_field(issue, unit), issue.message) for issue in report.issues],
    )


def table_error(filename: str, exc: TableError) -> InvalidArgument:
    where = "file" if not exc.row else f"file/row {exc.row}"
    field_name = f"{where}/{exc.column}" if exc.column else where
    return InvalidArgument(f"Dataset validation failed: {filename}: {exc}", [FieldViolation(field_name, exc.message)])


def checked_mapping(mapping: Mapping[str, str] | None, field_name: str = "column_mapping") -> dict[str, str]:
    """A column mapping (format field -> column) as stored; InvalidArgument naming each bad entry."""
    if not mapping:
        return {}
    problems = mapping_problems(mapping)
    if problems:
        raise InvalidArgument(
            "Invalid column mapping: " + "; ".join(f"{name or 'mapping'} {message}" for name, message in problems),
            [FieldViolation(f"{field_name}/{name}" if name else field_name, message) for name, message in problems],
        )
    return dict(mapping)


def name_candidates(filename: str) -> Iterator[str]:
    """data.jsonl, data-2.jsonl, data-3.jsonl, ..."""
    yield filename
    stem = filename[: -len(DATASET_SUFFIX)]
    for number in range(2, _MAX_RENAMES):
        yield f"{stem}-{number}{DATASET_SUFFIX}"
