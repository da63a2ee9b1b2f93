"""Keeps the benchmarks from rotting: `python -m bench --quick` runs each one for a single tiny iteration
against one real stack and must write a RESULTS.md with every table in shape. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench_report import NUMBER, tables

from bench.__main__ import BENCHMARKS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
VERDICTS = {"met", "NOT MET", "not measured"}



def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output.read_text()


def test_header_names_the_machine_and_libraries(results: str) -> None:
    for field in ("- Date: ", "CPU: ", "RAM: ", "GPU: ", "- Load average", "- Libraries: torch ", "trl "):
        assert field in results
    assert "FAILED" not in results


def test_goals_table_lists_every_goal_with_a_verdict(results: str) -> None:
    goals = tables(results)["Goals (issue 8, and issue 7's load test)"]
    assert goals[0] == ["benchmark", "goal", "target", "measured", "verdict"]
    rows = goals[1:]
    assert all(row[4] in VERDICTS or re.match(r"^(met|NOT MET) \(uncertain: .+\)$", row[4]) for row in rows), rows
    names = " ".join(row[1] for row in rows)
    for goal in (
        "training throughput",
        "p99 latency",
        "no errors, no missed events",
        "gateway adds to p50",
        "tokens/s of POST /api/playground/generate",
        "tokens/s of POST /api/playground/stream",
    ):
        assert goal in names


@pytest.mark.parametrize(
    ("heading", "table", "columns", "rows"),
    [
        ("Training overhead", "Throughput (median of rounds)", ["side", "steps/s", "tokens/s", "per-round steps/s"], 3),
        ("Training overhead", "Cold start, ModelForge request to first step (s, median)", ["phase", "seconds"], 6),
        ("Training at ~110M", "Throughput (median of rounds)", ["side", "steps/s", "tokens/s", "per-round steps/s"], 3),
        (
            "Event latency",
            "Event latency, on_log to WebSocket receipt (ms)",
            ["configuration", "p50", "p99", "max", "events received", "per-round p99"],
            2,
        ),
        (
            "Gateway overhead",
            "Gateway overhead (median of per-round differences and ratios)",
            [
                "endpoint",
                "clients",
                "p50 added ms",
                "p99 added ms",
                "p50 ratio",
                "requests/s ratio",
                "CPU ms added/request",
            ],
            4,
        ),
        (
            "Generation",
            "Tokens/s and time to first token (median of rounds)",
            ["side", "new tokens", "wall ms", "tokens/s", "first token ms", "tokens/s vs plain", "CPU ms/token"],
            3,
        ),
    ],
)
def test_benchmark_tables_hold_measurements(
    results: str, heading: str, table: str, columns: list[str], rows: int
) -> None:
    found = tables(section(results, heading))[table]
    assert found[0] == columns
    assert len(found) == rows + 1
    for row in found[1:]:
        assert len(row) == len(columns)
        # The second column holds a measurement in every table (n/a only where nothing applies).
        assert NUMBER.match(row[1]), row


def test_load_test_saw_every_event(results: str) -> None:
    load = tables(section(results, "Event latency"))[
        "Load test: errors, missed events, status readers, training throughput"
    ]
    assert all(row[1] == "0" for row in load[1:]), load
    assert int(load[-1][2]) > 0  # the status readers ran


def test_every_benchmark_has_a_section(results: str) -> None:
    headings = re.findall(r"^## (.+)$", results, re.MULTILINE)
    for name in ("Training overhead", "Event latency", "Gateway overhead", "Generation", "Training at ~110M", "GPU"):
        assert sum(heading.startswith(name) for heading in headings) == 1, headings
    assert len(headings) >= len(BENCHMARKS)
    assert "not measured" in section(results, "GPU") or "QLoRA on" in section(results, "GPU")


def test_training_shows_where_the_cpu_goes(results: str) -> None:
    cpu = tables(section(results, "Training overhead"))["CPU time per run (median of rounds): where the work happens"]
    assert cpu[0] == ["process", "CPU s per run", "CPU ms per training step"]
    rows = {row[0]: row for row in cpu[1:]}
    assert float(rows["plain trl script (whole process)"][1]) > 0
    assert float(rows["ModelForge worker (whole process)"][1]) > 0  # the reaped worker was counted
    assert float(rows["gateway"][1]) > 0


def test_gateway_time_is_split_by_layer(results: str) -> None:
    found = tables(section(results, "Gateway overhead"))
    layers = next(rows for title, rows in found.items() if title.startswith("Where the gateway's time goes"))
    assert layers[0] == ["layer", "ms per request", "share of request time"]
    names = [row[0] for row in layers[1:]]
    assert names[-1] == "total in uvicorn's protocol and ASGI call" and len(names) >= 3
    assert float(layers[-1][1]) > 0
