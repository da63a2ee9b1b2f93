"""Keeps the load benchmark from rotting: `python -m bench --quick --only load` (a few clients for two
seconds per side against one real stack and the bare FastAPI app) must write its section with every
table in shape and a verdict for each goal. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench_report import NUMBER, tables

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def section(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = tmp_path_factory.mktemp("bench-load") / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "load", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = output.read_text()
    start = text.index("## Load")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_both_sides_answered_every_request(section: str) -> None:
    (name,) = [title for title in tables(section) if title.startswith("Requests/s and latency at ")]
    rows = tables(section)[name]
    assert rows[0] == ["side", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU ms/request"]
    assert [row[0] for row in rows[1:]] == ["bare FastAPI (uvicorn)", "ModelForge gateway"]
    for row in rows[1:]:
        assert all(NUMBER.match(cell) for cell in row[1:]), row
        assert row[4] == "0", row  # no errors on either side
        assert float(row[1].replace(",", "")) > 0


def test_both_paths_were_read_on_both_sides(section: str) -> None:
    rows = tables(section)["Latency by path (median of rounds)"]
    assert rows[0] == ["side", "path", "p50 ms", "p99 ms", "requests"]
    seen = {(row[0], row[1]) for row in rows[1:] if int(row[4]) > 0}
    sides = ("bare FastAPI (uvicorn)", "ModelForge gateway")
    assert seen == {(side, path) for side in sides for path in ("/api/training_status", "/api/models")}


def test_server_cpu_is_split_by_process(section: str) -> None:
    rows = tables(section)["Server CPU per request by process (median of rounds)"]
    processes = {(row[0], row[1]) for row in rows[1:]}
    assert ("bare FastAPI (uvicorn)", "bare app") in processes
    assert {("ModelForge gateway", name) for name in ("gateway", "trainer", "registry")} <= processes


def test_every_goal_has_a_verdict(section: str) -> None:
    goals = tables(section)["Goals"]
    verdicts = {row[0]: row[3] for row in goals[1:]}
    assert len(verdicts) == 3
    assert any(goal.startswith("requests/s through the gateway vs the bare app") for goal in verdicts)
    assert any(goal.startswith("p99 latency through the gateway") for goal in verdicts)
    assert verdicts["no errors under load (both sides)"] == "met"
    assert all(re.match(r"^(met|NOT MET)( \(uncertain: .+\))?$", verdict) for verdict in verdicts.values())
