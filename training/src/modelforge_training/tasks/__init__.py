"""Per-task data preparation: dataset rows (any accepted format) -> what a strategy's trainer consumes.
Plain Python over row dicts, so it is unit-tested without models."""

from __future__ import annotations

import random
from typing import Any


def split_rows(
    rows: list[dict[str, Any]], eval_split: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded shuffle, then eval_split of the rows (at least one, never all) held out for evaluation."""
    if len(rows) < 2:
        raise ValueError(f"need at least 2 rows to hold out an evaluation split, got {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_split)))
    eval_rows = [rows[i] for i in order[:n_eval]]
    train_rows = [rows[i] for i in order[n_eval:]]
    return train_rows, eval_rows
