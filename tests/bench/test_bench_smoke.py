"""Keeps the benchmarks from rotting: `python -m bench --quick` runs each one for a single tiny iteration
against one real stack and must write a RESULTS.md with every table in shape. No timing is asserted.

Every check that needs a quick run lives here, the Load and Serving sections' included, so the suite pays
for one run (module fixture; --dist loadfile gives this file to one worker): they used to run their own
(`--only load`, and bench.serving in process and through a second stack), about 3 minutes more."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench_report import NUMBER, VERDICT, section, table, tables

from bench.__main__ import BENCHMARKS
from bench.serving import ADAPTERS_FOR_MEMORY, USERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
VERDICTS = {"met", "NOT MET", "not measured"}


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
    gpu_serving = section(results, "Serving many users on a GPU")
    assert "not measured" in gpu_serving or "Time to first token, in process vs through the stack" in gpu_serving


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


# --- Load (bench/load.py): a few clients for two seconds per side against the stack and the bare app ---


@pytest.fixture(scope="module")
def load(results: str) -> str:
    return section(results, "Load")


def test_load_both_sides_answered_every_request(load: str) -> None:
    (name,) = [title for title in tables(load) if title.startswith("Requests/s and latency at ")]
    rows = tables(load)[name]
    assert rows[0] == ["side", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU ms/request"]
    assert [row[0] for row in rows[1:]] == ["bare FastAPI (uvicorn)", "ModelForge gateway"]
    for row in rows[1:]:
        assert all(NUMBER.match(cell) for cell in row[1:]), row
        assert row[4] == "0", row  # no errors on either side
        assert float(row[1].replace(",", "")) > 0


def test_load_both_paths_were_read_on_both_sides(load: str) -> None:
    rows = tables(load)["Latency by path (median of rounds)"]
    assert rows[0] == ["side", "path", "p50 ms", "p99 ms", "requests"]
    seen = {(row[0], row[1]) for row in rows[1:] if int(row[4]) > 0}
    sides = ("bare FastAPI (uvicorn)", "ModelForge gateway")
    assert seen == {(side, path) for side in sides for path in ("/api/training_status", "/api/models")}


def test_load_server_cpu_is_split_by_process(load: str) -> None:
    rows = tables(load)["Server CPU per request by process (median of rounds)"]
    processes = {(row[0], row[1]) for row in rows[1:]}
    assert ("bare FastAPI (uvicorn)", "bare app") in processes
    assert {("ModelForge gateway", name) for name in ("gateway", "trainer", "registry")} <= processes


def test_load_every_goal_has_a_verdict(load: str) -> None:
    goals = tables(load)["Goals"]
    verdicts = {row[0]: row[3] for row in goals[1:]}
    assert len(verdicts) == 3
    assert any(goal.startswith("requests/s through the gateway vs the bare app") for goal in verdicts)
    assert any(goal.startswith("p99 latency through the gateway") for goal in verdicts)
    assert verdicts["no errors under load (both sides)"] == "met"
    assert all(VERDICT.match(verdict) for verdict in verdicts.values())


# --- Serving (bench/serving.py): in process on the tiny model, then the same users through the stack ---


@pytest.fixture(scope="module")
def serving(results: str) -> str:
    return section(results, "Serving")


def test_serving_every_user_count_has_served_and_plain_measurements(serving: str) -> None:
    rows = table(serving, "Aggregate tokens/s")
    assert rows[0][:3] == ["users", "served tokens/s", "plain batched tokens/s"]
    assert [int(row[0]) for row in rows[1:]] == list(USERS)
    for row in rows[1:]:
        assert all(NUMBER.match(cell) for cell in row[1:4]), row


def test_serving_memory_table_and_every_goal_has_a_verdict(serving: str) -> None:
    memory = table(serving, "Memory of loaded weights")
    assert len(memory) == 5 and all(NUMBER.match(row[1]) and float(row[1]) > 0 for row in memory[1:])
    goals = table(serving, "Goals")
    names = " ".join(row[0] for row in goals[1:])
    for goal in ("8 users' aggregate tokens/s", "one user's tokens/s vs plain generate (whole)",
                 "one user's tokens/s vs plain generate (streamed)", "time to first token p99",
                 f"memory of {ADAPTERS_FOR_MEMORY} adapters"):
        assert goal in names
    assert all(VERDICT.match(row[3]) for row in goals[1:]), goals
    # One base copy serves all ten adapters, whatever the timing.
    memory_goal = next(row for row in goals[1:] if row[0].startswith("memory"))
    assert "(1 base copy)" in memory_goal[2]


def test_serving_through_the_stack_every_user_streamed_and_both_goals_are_judged(serving: str) -> None:
    rows = table(serving, "Through the stack, POST /api/playground/stream")
    assert [row[0] for row in rows] == ["users", "1 at a time", "8 at once"]
    for row in rows[1:]:
        assert all(NUMBER.match(cell) and float(cell.replace(",", "")) > 0 for cell in row[1:]), row
    side_by_side = table(serving, "Time to first token, in process vs through the stack")
    assert [row[0].split(" (")[0] for row in side_by_side[1:]] == ["in process", "through the stack"]
    # Every user of the round saw visible text: 8 first tokens a side, in process and through the stack.
    assert [row[1] for row in side_by_side[1:]] == ["8", "8"]
    cpu = table(serving, "Through the stack, where a request's CPU goes")
    assert [row[0] for row in cpu[1:]] == ["gateway", "registry", "inference"]
    assert all(NUMBER.match(cell) for row in cpu[1:] for cell in row[1:]), cpu
    goals = table(serving, "Goals")
    ttft = [row for row in goals[1:] if row[0].startswith("time to first token p99")]
    assert len(ttft) == 2 and ttft[0][0].endswith("in process") and "through the stack" in ttft[1][0]
    assert all(VERDICT.match(row[3]) for row in goals[1:]), goals


def test_serving_shows_the_prefill_floor_under_the_first_token_goal(serving: str) -> None:
    rows = table(serving, "The floor under the first-token goal")
    assert [row[0] for row in rows] == ["pass", "one user's prompt alone (mean over the 8 users)",
                                        "the 8 users' prompts in one pass"]
    assert all(NUMBER.match(cell) and float(cell) > 0 for row in rows[1:] for cell in row[1:]), rows
    # Eight prompts in one pass are at least as much work as one of them.
    assert float(rows[2][2]) >= 1.0, rows
