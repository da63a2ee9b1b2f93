"""OpenAI fine-tuning files, checked line by line and mapped onto the platform's dataset rows.

Two OpenAI formats are accepted, one per file:
- chat: ``{"messages": [{"role", "content"}, ...]}``, stored unchanged (the platform trains on chat
  rows as they are);
- preference: ``{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}],
  "non_preferred_output": [...]}``, stored with the platform's DPO fields ``prompt`` / ``chosen`` /
  ``rejected`` added beside the original ones. The file's content reads back without them.

A multi-turn preference input becomes one prompt: the platform's DPO rows hold a single prompt
string, so earlier turns are written out as a transcript ("System: ...", "User: ...") before the
last user turn, which is how the trainer's plain-prompt form reads them too.

Plain Python: no fastapi, no grpc.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelforge_common.catalog import MIN_DATASET_ROWS

CHAT = "chat"
PREFERENCE = "preference"
ROLES = ("system", "user", "assistant")
# The platform's DPO fields added to a stored preference row (and removed again when it is read).
DPO_FIELDS = ("prompt", "chosen", "rejected")
MAX_REPORTED = 20
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = ".jsonl"
MAX_STEM = 120


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based; 0 for the file as a whole
    param: str  # where in the row, e.g. "messages[1].role"; "" for the whole line
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}{': ' + self.param if self.param else ''}: {self.message}"


@dataclass
class CheckedFile:
    """What a checked upload holds: its format, the rows to store, and every problem found."""

    kind: str | None = None
    rows: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    total_problems: int = 0
    stored_lines: list[bytes] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.total_problems == 0

    def add(self, problem: LineProblem) -> None:
        self.total_problems += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)

    def summary(self) -> str:
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {self.total_problems - 5} more)" if self.total_problems > 5 else ""
        return f"Invalid fine-tuning file: {shown}{more}"

    def content(self) -> bytes:
        return b"".join(self.stored_lines)


def _message_problems(messages: Any, where: str, *, need_assistant: bool) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        return [(where, "must be a non-empty list of {role, content} objects")]
    problems: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            problems.append((at, "must be an object with role and content"))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append((f"{at}.role", f"must be one of {', '.join(ROLES)}, got {role!r}"))
        for unsupported in ("tool_calls", "function_call", "audio", "refusal"):
            if message.get(unsupported) is not None:
                problems.append((f"{at}.{unsupported}", "is not supported: ModelForge trains on text turns"))
        content = message.get("content")
        if not isinstance(content, str):
            problems.append((f"{at}.content", "must be a string"))
        weight = message.get("weight")
        if weight is not None and weight != 1:
            problems.append((f"{at}.weight", "only weight 1 is supported: remove the turn instead"))
    if need_assistant and not problems and not any(m.get("role") == "assistant" for m in messages):
        problems.append((where, "needs at least one assistant message to learn from"))
    return problems


def _chat_problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    problems = _message_problems(row.get("messages"), "messages", need_assistant=True)
    for unsupported in ("tools", "functions", "parallel_tool_calls"):
        if row.get(unsupported):
            problems.append((unsupported, "is not supported: ModelForge trains on text turns"))
    return problems


def _single_answer(row: dict[str, Any], name: str) -> tuple[str | None, list[tuple[str, str]]]:
    value = row.get(name)
    if not isinstance(value, list) or len(value) != 1:
        return None, [(name, "must be a list holding exactly one assistant message")]
    problems = _message_problems(value, name, need_assistant=False)
    if problems:
        return None, problems
    message = value[0]
    if message.get("role") != "assistant":
        return None, [(f"{name}[0].role", "must be assistant")]
    if not message["content"].strip():
        return None, [(f"{name}[0].content", "must not be empty")]
    return str(message["content"]), []


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """One prompt string from the input turns: the last user turn, after a transcript of the rest."""
    *earlier, last = messages
    transcript = [f"{m['role'].capitalize()}: {m['content']}" for m in earlier]
    return "\n".join([*transcript, last["content"]]) if transcript else str(last["content"])


def _preference_row(row: dict[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    source = row.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    if not isinstance(source, dict):
        problems.append(("input", "must be an object with messages"))
    else:
        found = _message_problems(messages, "input.messages", need_assistant=False)
        problems.extend(found)
        # Without problems, messages is a non-empty list of turns.
        turns: list[Any] = messages if isinstance(messages, list) else []
        if not found and turns and turns[-1].get("role") != "user":
            problems.append((f"input.messages[{len(turns) - 1}].role", "the last input turn must be user"))
        elif not found and turns and not turns[-1]["content"].strip():
            problems.append((f"input.messages[{len(turns) - 1}].content", "must not be empty"))
    chosen, found = _single_answer(row, "preferred_output")
    problems.extend(found)
    rejected, found = _single_answer(row, "non_preferred_output")
    problems.extend(found)
    if problems:
        return None, problems
    assert isinstance(messages, list) and chosen is not None and rejected is not None
    return {**row, "prompt": prompt_text(messages), "chosen": chosen, "rejected": rejected}, []


def row_kind(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return CHAT
    if any(name in row for name in ("input", "preferred_output", "non_preferred_output")):
        return PREFERENCE
    return None


def _lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if raw.strip():
            yield number, raw


def check_file(content: bytes) -> CheckedFile:
    """Every line checked; the stored rows (chat unchanged, preference with the DPO fields added)."""
    checked = CheckedFile()
    for number, raw in _lines(content):
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            checked.add(LineProblem(number, "", "is not UTF-8 text"))
            continue
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            checked.add(LineProblem(number, "", f"is not valid JSON ({reason})"))
            continue
        if not isinstance(row, dict):
            checked.add(LineProblem(number, "", f"must be a JSON object, got {type(row).__name__}"))
            continue
        kind = row_kind(row)
        if kind is None:
            checked.add(LineProblem(
                number, "", "expected the chat format {\"messages\": [...]} or the preference format "
                "{\"input\": {\"messages\": [...]}, \"preferred_output\": [...], \"non_preferred_output\": [...]}",
            ))
            continue
        if checked.kind is None:
            checked.kind = kind
        elif kind != checked.kind:
            checked.add(LineProblem(number, "", f"is a {kind} row, but the file's first row is {checked.kind}"))
            continue
        if kind == CHAT:
            problems = _chat_problems(row)
            stored = raw.rstrip(b"\r") + b"\n"
        else:
            converted, problems = _preference_row(row)
            stored = (json.dumps(converted, ensure_ascii=False) + "\n").encode() if converted else b""
        for param, message in problems:
            checked.add(LineProblem(number, param, message))
        if not problems:
            checked.rows += 1
            checked.stored_lines.append(stored)
    if checked.valid and checked.rows == 0:
        checked.add(LineProblem(0, "", "the file has no rows"))
    elif checked.valid and checked.rows < MIN_DATASET_ROWS:
        checked.add(LineProblem(0, "", f"has {checked.rows} rows; at least {MIN_DATASET_ROWS} are needed"))
    return checked


def original_lines(stored: bytes) -> Iterable[bytes]:
    """A stored file as the client uploaded it: preference rows without the added DPO fields."""
    for _, raw in _lines(stored):
        row = json.loads(raw)
        if isinstance(row, dict) and row_kind(row) == PREFERENCE:
            original = {k: v for k, v in row.items() if k not in DPO_FIELDS}
            yield (json.dumps(original, ensure_ascii=False) + "\n").encode()
        else:
            yield raw + b"\n"


# --- ids and names ---------------------------------------------------------------------------------


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def display_name(filename: str) -> str:
    """The client's file name as the registry can store it: a safe stem ending in .jsonl."""
    base = re.split(r"[\\/]", filename.strip())[-1]
    stem = base[: -len(_SUFFIX)] if base.lower().endswith(_SUFFIX) else base
    safe = _UNSAFE.sub("_", stem).strip("._-")[:MAX_STEM] or "file"
    return safe + _SUFFIX


def stored_name(file_id: str, filename: str) -> str:
    """The registry dataset that holds a file: "<file id>.<display name>"."""
    return f"{file_id}.{display_name(filename)}"


def parse_stored_name(dataset_filename: str) -> tuple[str, str] | None:
    """(file id, display name) of a dataset stored through /v1/files; None for other datasets."""
    file_id, dot, name = dataset_filename.partition(".")
    if not dot or not FILE_ID.match(file_id) or not name:
        return None
    return file_id, name
