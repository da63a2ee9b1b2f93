"""JSONL dataset checks shared by upload (registry) and job start (trainer); the training worker
loads rows with `load_rows`. Lines are split and parsed by modelforge_common.dataset_lines.

A row matches a *format* (a set of fields with rules). Each task/strategy accepts some formats;
an upload, which names no task, accepts a row that matches any of them. Problems are reported
with their 1-based line number and field so a user can fix the file.

Column mapping: a dataset whose columns are not a known shape is used through a mapping of format
fields to its columns (``{"prompt": "question", "completion": "answer"}``), stored beside the file
as ``<file>.columns.json``. Every reader here (`validate_file`, `load_rows`) applies it, so upload,
the job start check and the training worker all see the same mapped rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge_common.catalog import MIN_DATASET_ROWS
from modelforge_common.dataset_lines import (
    LineError,
    LineReader,
    is_blank,
    iter_rows,
    parse_row,
    read_rows,
    split_lines,
)

MAX_REPORTED_ISSUES = 50

Check = Callable[[dict[str, Any]], list[tuple[str, str]]]


@dataclass(frozen=True)
class RowIssue:
    line: int  # 0 for the file as a whole
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}{', field ' + self.field if self.field else ''}: {self.message}"


@dataclass
class DatasetReport:
    num_examples: int = 0
    issues: list[RowIssue] = field(default_factory=list)
    total_issues: int = 0
    fields: set[str] = field(default_factory=set)
    formats: set[str] = field(default_factory=set)

    @property
    def valid(self) -> bool:
        return self.total_issues == 0

    def add(self, issue: RowIssue) -> None:
        self.total_issues += 1
        if len(self.issues) < MAX_REPORTED_ISSUES:
            self.issues.append(issue)

    def summary(self) -> str:
        shown = "; ".join(str(i) for i in self.issues[:5])
        more = f" (and {self.total_issues - 5} more)" if self.total_issues > 5 else ""
        return f"{self.total_issues} problem(s): {shown}{more}"


def _non_empty_str(row: dict[str, Any], name: str) -> list[tuple[str, str]]:
    value = row.get(name)
    if not isinstance(value, str):
        return [(name, f"must be a string, got {type(value).__name__}")]
    if not value.strip():
        return [(name, "must not be empty")]
    return []


def _strings(*names: str, optional: tuple[str, ...] = ()) -> Check:
    def check(row: dict[str, Any]) -> list[tuple[str, str]]:
        found = [p for n in names for p in _non_empty_str(row, n)]
        for name in optional:
            if name in row and not isinstance(row[name], str):
                found.append((name, f"must be a string, got {type(row[name]).__name__}"))
        return found

    return check


def _messages(row: dict[str, Any]) -> list[tuple[str, str]]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [("messages", "must be a non-empty list of {role, content} objects")]
    problems: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append((where, "must be an object with role and content"))
            continue
        if message.get("role") not in ("system", "user", "assistant"):
            problems.append((f"{where}.role", "must be one of system, user, assistant"))
        if not isinstance(message.get("content"), str):
            problems.append((f"{where}.content", "must be a string"))
    if not problems and not any(m.get("role") == "assistant" for m in messages):
        problems.append(("messages", "needs at least one assistant message to learn from"))
    return problems


def _squad(row: dict[str, Any]) -> list[tuple[str, str]]:
    problems = _strings("context", "question")(row)
    answers = row.get("answers")
    if not isinstance(answers, dict):
        return [*problems, ("answers", "must be an object {text: [...], answer_start: [...]}")]
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        problems.append(("answers.text", "must be a non-empty list of non-empty strings"))
    elif not isinstance(starts, list) or len(starts) != len(texts):
        problems.append(("answers.answer_start", "must be a list of integers, one per answer text"))
    elif not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in starts):
        problems.append(("answers.answer_start", "must hold non-negative integers"))
    elif isinstance(row.get("context"), str):
        context = row["context"]
        for text, start in zip(texts, starts, strict=True):
            if context[start : start + len(text)] != text:
                problems.append(
                    ("answers.answer_start", f"answer {text!r} is not found in context at offset {start}")
                )
    return problems


@dataclass(frozen=True)
class RowFormat:
    name: str
    keys: tuple[str, ...]  # fields whose presence selects this format
    check: Check


FORMATS = {
    "chat": RowFormat("chat", ("messages",), _messages),
    "prompt_completion": RowFormat("prompt_completion", ("prompt", "completion"), _strings("prompt", "completion")),
    "alpaca": RowFormat("alpaca", ("instruction", "output"), _strings("instruction", "output", optional=("input",))),
    "input_output": RowFormat("input_output", ("input", "output"), _strings("input", "output")),
    "text_summary": RowFormat("text_summary", ("text", "summary"), _strings("text", "summary")),
    "document_summary": RowFormat("document_summary", ("document", "summary"), _strings("document", "summary")),
    "squad": RowFormat("squad", ("context", "question", "answers"), _squad),
    "preference": RowFormat("preference", ("prompt", "chosen", "rejected"), _strings("prompt", "chosen", "rejected")),
}

_GENERATION = ("chat", "prompt_completion", "alpaca", "input_output")
_SUMMARIZATION = ("text_summary", "document_summary")


def formats_for(task: str | None, strategy: str | None) -> tuple[str, ...]:
    """Formats a (task, strategy) accepts; every format when both are None (upload)."""
    if task is None:
        return tuple(FORMATS)
    if strategy in ("dpo", "rlhf"):
        return ("preference",)
    if task == "text-generation":
        return _GENERATION
    if task == "summarization":
        return _SUMMARIZATION
    if task == "extractive-question-answering":
        return ("squad",)
    return ()


def _describe(names: Iterable[str]) -> str:
    return " | ".join("+".join(FORMATS[n].keys) for n in names)


def match_row(row: dict[str, Any], allowed: tuple[str, ...]) -> tuple[str | None, list[tuple[str, str]]]:
    """The first allowed format the row satisfies, else the problems of the closest candidate."""
    # Most specific first: preference rows also carry "prompt".
    candidates = sorted(
        (FORMATS[n] for n in allowed if all(k in row for k in FORMATS[n].keys)),
        key=lambda f: -len(f.keys),
    )
    first_problems: list[tuple[str, str]] | None = None
    for fmt in candidates:
        problems = fmt.check(row)
        if not problems:
            return fmt.name, []
        first_problems = first_problems if first_problems is not None else problems
    if first_problems is not None:
        return None, first_problems
    return None, [("", f"has fields {sorted(row)}; expected one of: {_describe(allowed)}")]


def parse_line(raw: bytes | str, line_no: int) -> tuple[dict[str, Any] | None, RowIssue | None]:
    """One line (without its ending) parsed by the shared line rules (modelforge_common.dataset_lines)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    try:
        return parse_row(raw, line_no), None
    except LineError as exc:
        return None, RowIssue(line_no, exc.field, exc.message)


MAPPING_SUFFIX = ".columns.json"
# Where rows that were not uploaded as JSONL came from (registry-svc writes it: format, original file
# or Hub id/config/split/revision/sha); the trainer copies it into the model's lineage.
SOURCE_SUFFIX = ".source.json"


def mappable_fields() -> tuple[str, ...]:
    """Every field some format reads (what a column mapping may map to)."""
    names = {key for fmt in FORMATS.values() for key in fmt.keys} | {"input"}
    return tuple(sorted(names))


def mapping_problems(mapping: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, message) for each unusable entry of a column mapping (format field -> column)."""
    known = mappable_fields()
    problems: list[tuple[str, str]] = []
    for target, column in mapping.items():
        if target not in known:
            problems.append((target, f"is not a format field (one of {', '.join(known)})"))
        elif not isinstance(column, str) or not column.strip():
            problems.append((target, "must name a column of the dataset"))
    if not mapping:
        problems.append(("", "maps no field"))
    return problems


def apply_mapping(row: dict[str, Any], mapping: Mapping[str, str], line: int) -> dict[str, Any]:
    """The row as the mapping reads it: only the mapped fields. LineError naming the column the
    row lacks."""
    mapped: dict[str, Any] = {}
    for target, column in mapping.items():
        if column not in row:
            raise LineError(line, f"has no column {column!r} (mapped to {target})", column)
        mapped[target] = row[column]
    return mapped


def mapping_path(path: str | Path) -> Path:
    """Where a dataset file's column mapping is stored."""
    return Path(f"{path}{MAPPING_SUFFIX}")


def read_mapping(path: str | Path) -> dict[str, str] | None:
    """The column mapping stored beside a dataset file; None when it has none."""
    try:
        text = mapping_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    value = json.loads(text)
    if not isinstance(value, dict) or mapping_problems(value):
        raise ValueError(f"the column mapping beside {path} is damaged")
    return {str(k): str(v) for k, v in value.items()}


def source_path(path: str | Path) -> Path:
    return Path(f"{path}{SOURCE_SUFFIX}")


def dataset_origin(path: str | Path) -> dict[str, dict[str, str]]:
    """{"column_mapping": ..., "source": ...} as stored beside a dataset file, each only when there
    is one (a plain JSONL upload has neither)."""
    found: dict[str, dict[str, str]] = {}
    try:
        mapping = read_mapping(path)
    except ValueError:
        mapping = None
    if mapping:
        found["column_mapping"] = mapping
    try:
        source = json.loads(source_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        source = None
    if isinstance(source, dict) and source:
        found["source"] = {str(k): str(v) for k, v in source.items()}
    return found


def validate_lines(
    lines: bytes | LineReader | Iterable[bytes | str],
    task: str | None = None,
    strategy: str | None = None,
    mapping: Mapping[str, str] | None = None,
) -> DatasetReport:
    """Checks every line (split and parsed as dataset_lines says, then read through the column
    mapping when there is one); blank lines are skipped. Counts rows that pass. `fields` holds the
    file's own columns."""
    report = DatasetReport()
    allowed = formats_for(task, strategy)
    saw_line = False
    for line_no, raw in split_lines(lines):
        if is_blank(raw):
            continue
        saw_line = True
        row, issue = parse_line(raw, line_no)
        if issue is not None:
            report.add(issue)
            continue
        assert row is not None
        report.fields.update(row)
        if mapping:
            try:
                row = apply_mapping(row, mapping, line_no)
            except LineError as exc:
                report.add(RowIssue(line_no, exc.field, exc.message))
                continue
        fmt, problems = match_row(row, allowed)
        if fmt is None:
            for name, message in problems:
                report.add(RowIssue(line_no, name, message))
            continue
        report.formats.add(fmt)
        report.num_examples += 1
    if not saw_line:
        report.add(RowIssue(0, "", "the file is empty"))
    elif report.valid and report.num_examples < MIN_DATASET_ROWS:
        report.add(
            RowIssue(0, "", f"has {report.num_examples} rows; at least {MIN_DATASET_ROWS} are needed")
        )
    return report


def validate_file(path: str | Path, task: str | None = None, strategy: str | None = None) -> DatasetReport:
    """`validate_lines` over a stored dataset file, through its column mapping when it has one."""
    mapping = read_mapping(path)
    with open(path, "rb") as handle:
        return validate_lines(handle, task=task, strategy=strategy, mapping=mapping)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, split and parsed exactly as upload and validation do (blank lines
    skipped) and read through its column mapping when it has one; a bad line raises
    dataset_lines.LineError (a ValueError) with its number."""
    mapping = read_mapping(path)
    if not mapping:
        return read_rows(path)
    with open(path, "rb") as handle:
        return [apply_mapping(row, mapping, number) for number, row in iter_rows(handle)]
