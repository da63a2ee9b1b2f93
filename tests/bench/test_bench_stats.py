"""The statistics the benchmark tables are built from (no stack, no timing)."""

from __future__ import annotations

import math

from bench.common import Goal, percentile, ratio_doubt


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_ratio_doubt_flags_disagreeing_rounds_and_impossible_gains() -> None:
    assert ratio_doubt([0.98, 1.01, 0.99]) == ""
    assert ratio_doubt([0.69, 1.32, 3.22]).startswith("rounds disagree")
    assert "baseline ran slow" in ratio_doubt([5.0, 4.8, 5.1])
    assert ratio_doubt([float("nan")]) == ""


def test_goal_verdicts() -> None:
    assert Goal("g", ">= 1", "2", True).verdict == "met"
    assert Goal("g", ">= 1", "0.5", False).verdict == "NOT MET"
    assert Goal("g", ">= 1", "no GPU", None).verdict == "not measured"
    assert Goal("g", ">= 1", "2", True, doubt="rounds disagree").verdict == "met (uncertain: rounds disagree)"
    assert Goal("g", ">= 1", "0.5", False, doubt="rounds disagree").verdict == "NOT MET (uncertain: rounds disagree)"
    assert Goal("g", ">= 1", "n/a", None, doubt="rounds disagree").verdict == "not measured"
