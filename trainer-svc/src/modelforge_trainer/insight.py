"""Dataset insight: a dataset as a base model's tokenizer sees it, before paying for a run.

Rows are read by modelforge_common.dataset_rows.load_rows (the dataset's column mapping applied,
exactly as the worker will read them). For every field: token lengths (min, nearest-rank p50 and
p95, max, mean); for "total", each row rendered as training renders it (text generation: the chat
template over prompt and completion when the tokenizer has one, else the plain instruction format
with EOS; other tasks: their text fields one after another), which is what max_length truncates.
Counted too: rows over max_length, rows equal to an earlier row, and per field the rows where it
is missing or blank.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge_common.dataset_rows import load_rows
from modelforge_common.errors import FieldViolation, InvalidArgument, NotFound, Unavailable
from modelforge_common.model_paths import model_roots, resolve_local_model
from modelforge_trainer.model_tokenizer import ModelTokenizer, load_model_tokenizer, tokenizer_files
from modelforge_trainer.ports import DatasetLookup
from modelforge_training.tasks import text_generation

DEFAULT_MAX_LENGTH = 2048
DEFAULT_SAMPLE_SIZE = 3
MAX_SAMPLE_SIZE = 20
TOTAL = "total"
_GENERATION_KEYS = ("messages", "prompt", "instruction", "input")
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class LengthStats:
    field: str
    min: int
    p50: int
    p95: int
    max: int
    mean: float
    rows: int


@dataclass
class DatasetInsight:
    rows: int
    max_length: int
    fields: list[LengthStats]
    rows_over_max_length: int
    duplicate_rows: int
    empty_fields: dict[str, int]
    samples: list[str]
    total_lengths: list[int]
    chat_template: bool
    notes: list[str] = field(default_factory=list)


def nearest_rank(sorted_values: Sequence[int], percent: float) -> int:
    """The nearest-rank percentile: the smallest value with at least `percent`% of values at or below it."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def length_stats(name: str, lengths: Sequence[int]) -> LengthStats:
    ordered = sorted(lengths)
    return LengthStats(
        field=name,
        min=ordered[0],
        p50=nearest_rank(ordered, 50),
        p95=nearest_rank(ordered, 95),
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
        rows=len(ordered),
    )


def _is_generation_row(row: dict[str, Any]) -> bool:
    has_answer = "completion" in row or "output" in row or "messages" in row
    return has_answer and any(key in row for key in _GENERATION_KEYS) and "chosen" not in row


def _field_text(value: Any) -> str | None:
    """The text a field contributes (messages: their contents), None for non-text values."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n".join(str(m.get("content", "")) for m in value)
    return None


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False


def render_row(row: dict[str, Any], tokenizer: ModelTokenizer) -> str:
    """One row as training feeds it to the model."""
    if _is_generation_row(row):
        if tokenizer.chat_template:
            conversation = text_generation.to_conversation(row)
            return tokenizer.apply_chat_template(conversation["prompt"] + conversation["completion"])
        plain = text_generation.to_plain(row)
        return plain["prompt"] + plain["completion"] + (tokenizer.eos_token or "")
    texts = [text for value in row.values() if (text := _field_text(value)) is not None]
    return "\n\n".join(texts)


def count_tokens(tokenizer: ModelTokenizer, text: str) -> int:
    # The rendered text already holds the template's special tokens as text.
    return tokenizer.count(text)


def inspect_rows(
    rows: list[dict[str, Any]], tokenizer: ModelTokenizer, max_length: int = 0, sample_size: int = 0
) -> DatasetInsight:
    max_length = max_length or DEFAULT_MAX_LENGTH
    sample_size = min(sample_size or DEFAULT_SAMPLE_SIZE, MAX_SAMPLE_SIZE)
    names = list(dict.fromkeys(key for row in rows for key in row))
    per_field: dict[str, list[int]] = {name: [] for name in names}
    empty: dict[str, int] = dict.fromkeys(names, 0)
    totals: list[int] = []
    samples: list[str] = []
    seen: Counter[str] = Counter()
    for row in rows:
        for name in names:
            value = row.get(name)
            if _is_blank(value):
                empty[name] += 1
            text = _field_text(value)
            if text is not None:
                per_field[name].append(count_tokens(tokenizer, text))
        rendered = render_row(row, tokenizer)
        totals.append(count_tokens(tokenizer, rendered))
        if len(samples) < sample_size:
            samples.append(rendered)
        seen[json.dumps(row, sort_keys=True, ensure_ascii=False)] += 1
    stats = [length_stats(name, lengths) for name, lengths in per_field.items() if lengths]
    if totals:
        stats.append(length_stats(TOTAL, totals))
    return DatasetInsight(
        rows=len(rows),
        max_length=max_length,
        fields=stats,
        rows_over_max_length=sum(1 for total in totals if total > max_length),
        duplicate_rows=sum(count - 1 for count in seen.values()),
        empty_fields={name: count for name, count in empty.items() if count},
        samples=samples,
        total_lengths=totals,
        chat_template=bool(tokenizer.chat_template),
    )


def load_tokenizer(model: str, local: bool) -> ModelTokenizer:
    """The base model's tokenizer (a local folder, or a Hub id from the cache or the Hub)."""
    return load_model_tokenizer(tokenizer_files(model, local))


MAX_INSPECT_LENGTH = 1_000_000


async def inspect_dataset(
    datasets: DatasetLookup,
    data_dir: Path,
    dataset: str,
    model_name: str,
    max_length: int = 0,
    sample_size: int = 0,
) -> DatasetInsight:
    """Resolves the dataset (through the registry) and the base model, then `inspect_rows` off the
    event loop. InvalidArgument naming the field for bad input, Unavailable when the tokenizer must
    come from an unreachable Hub."""
    problems = []
    if not dataset.strip():
        problems.append(FieldViolation("dataset", "an uploaded dataset's filename is required"))
    if not model_name.strip():
        problems.append(FieldViolation("model_name", "a base model (Hub id or local folder) is required"))
    if not 0 <= max_length <= MAX_INSPECT_LENGTH:
        problems.append(FieldViolation("max_length", f"must be between 1 and {MAX_INSPECT_LENGTH} (0: default)"))
    if not 0 <= sample_size <= MAX_SAMPLE_SIZE:
        problems.append(FieldViolation("sample_size", f"must be between 1 and {MAX_SAMPLE_SIZE} (0: default)"))
    if problems:
        raise InvalidArgument("Invalid dataset inspection: " + "; ".join(p.description for p in problems), problems)
    folder = resolve_local_model(model_name, model_roots(data_dir), data_dir=data_dir)
    if folder is None and not HUB_MODEL_ID.match(model_name.strip()):
        # A bare name that is neither a folder in the model roots nor a Hub id (org/name).
        raise NotFound(f"Model {model_name} not found: use a Hub id such as 'org/name' or a local model folder")
    info = await datasets.get_dataset(dataset)

    def run() -> DatasetInsight:
        try:
            tokenizer = load_tokenizer(str(folder) if folder else model_name.strip(), local=folder is not None)
        except (OSError, ValueError) as exc:
            # OSError for a missing file or an unreachable Hub, ValueError for files that are no
            # tokenizer (model_tokenizer.py).
            if folder is not None or isinstance(exc, ValueError):
                raise InvalidArgument(
                    f"{model_name} has no tokenizer: {exc}", [FieldViolation("model_name", "holds no tokenizer")]
                ) from None
            raise Unavailable(
                f"The tokenizer of {model_name} could not be fetched from the Hugging Face Hub: {exc}"
            ) from None
        try:
            rows = load_rows(info.path)
        except ValueError as exc:
            message = f"Dataset {dataset} cannot be read: {exc}"
            raise InvalidArgument(message, [FieldViolation("dataset", str(exc))]) from None
        if not rows:
            raise InvalidArgument(f"Dataset {dataset} has no rows", [FieldViolation("dataset", "has no rows")])
        return inspect_rows(rows, tokenizer, max_length, sample_size)

    return await asyncio.to_thread(run)
