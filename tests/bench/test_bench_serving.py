"""Keeps bench/serving.py from rotting: one quick run on the tiny model, every table and goal in shape.
No timing is asserted (the goals' verdicts may go either way here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench_report import NUMBER

from bench.serving import ADAPTERS_FOR_MEMORY, USERS, measure
from modelforge_devkit.tiny_models import build_tiny_model

VERDICT = re.compile(r"^(met|NOT MET)( \(uncertain: .+\))?$")


@pytest.fixture(scope="module")
def markdown(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("serving")
    base = build_tiny_model(work / "tiny-llama", "causal")
    section = measure(base, work, quick=True)
    section.seconds = 1.0
    return section.markdown()


def table(markdown: str, title_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{title_start}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not all(set(cell) <= {"-"} for cell in cells):
            rows.append(cells)
    return rows


def test_every_user_count_has_served_and_plain_measurements(markdown: str) -> None:
    rows = table(markdown, "Aggregate tokens/s")
    assert rows[0][:3] == ["users", "served tokens/s", "plain batched tokens/s"]
    assert [int(row[0]) for row in rows[1:]] == list(USERS)
    for row in rows[1:]:
        assert all(NUMBER.match(cell) for cell in row[1:4]), row


def test_memory_table_and_every_goal_has_a_verdict(markdown: str) -> None:
    memory = table(markdown, "Memory of loaded weights")
    assert len(memory) == 5 and all(NUMBER.match(row[1]) and float(row[1]) > 0 for row in memory[1:])
    goals = table(markdown, "Goals")
    names = " ".join(row[0] for row in goals[1:])
    for goal in ("8 users' aggregate tokens/s", "one user's tokens/s vs plain generate (whole)",
                 "one user's tokens/s vs plain generate (streamed)", "time to first token p99",
                 f"memory of {ADAPTERS_FOR_MEMORY} adapters"):
        assert goal in names
    assert all(VERDICT.match(row[3]) for row in goals[1:]), goals
    # One base copy serves all ten adapters, whatever the timing.
    memory_goal = next(row for row in goals[1:] if row[0].startswith("memory"))
    assert "(1 base copy)" in memory_goal[2]


def test_the_section_is_registered_in_make_bench() -> None:
    from bench.__main__ import BENCHMARKS

    assert "serving" in BENCHMARKS
    assert Path(__file__).resolve().parents[2].joinpath("bench", "serving.py").is_file()


@pytest.fixture(scope="module")
def through_the_stack(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The quick run with a real stack (bench_context, as `python -m bench --quick --only serving`)."""
    from bench.common import bench_context
    from bench.serving import run

    with bench_context(tmp_path_factory.mktemp("serving-stack"), quick=True, size="tiny") as context:
        section = run(context)
    section.seconds = 1.0
    return section.markdown()


@pytest.mark.e2e
def test_through_the_stack_every_user_streamed_and_both_goals_are_judged(through_the_stack: str) -> None:
    rows = table(through_the_stack, "Through the stack, POST /api/playground/stream")
    assert [row[0] for row in rows] == ["users", "1 at a time", "8 at once"]
    for row in rows[1:]:
        assert all(NUMBER.match(cell) and float(cell.replace(",", "")) > 0 for cell in row[1:]), row
    side_by_side = table(through_the_stack, "Time to first token, in process vs through the stack")
    assert [row[0].split(" (")[0] for row in side_by_side[1:]] == ["in process", "through the stack"]
    # Every user of the round saw visible text: 8 first tokens a side, in process and through the stack.
    assert [row[1] for row in side_by_side[1:]] == ["8", "8"]
    cpu = table(through_the_stack, "Through the stack, where a request's CPU goes")
    assert [row[0] for row in cpu[1:]] == ["gateway", "registry", "inference"]
    assert all(NUMBER.match(cell) for row in cpu[1:] for cell in row[1:]), cpu
    goals = table(through_the_stack, "Goals")
    ttft = [row for row in goals[1:] if row[0].startswith("time to first token p99")]
    assert len(ttft) == 2 and ttft[0][0].endswith("in process") and "through the stack" in ttft[1][0]
    assert all(VERDICT.match(row[3]) for row in goals[1:]), goals
