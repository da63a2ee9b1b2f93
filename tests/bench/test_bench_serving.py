"""bench/serving.py is part of `make bench`. Its section's tables and goals are checked in
test_bench_smoke.py, on the one `python -m bench --quick` run the suite pays for."""

from __future__ import annotations

from pathlib import Path

from bench.serving import FirstTokens


def test_the_section_is_registered_in_make_bench() -> None:
    from bench.__main__ import BENCHMARKS

    assert "serving" in BENCHMARKS
    assert Path(__file__).resolve().parents[2].joinpath("bench", "serving.py").is_file()


def first_tokens(together_ms: list[float], alone_ms: list[float], halves: list[float]) -> FirstTokens:
    return FirstTokens(together_ms, alone_ms, p50_per_round=[2.0], p99_halves=halves)


def test_the_first_token_verdict_stands_and_says_when_the_devices_own_pass_is_near_the_goal() -> None:
    ttft = first_tokens([10.0] * 100, [4.0] * 100, [2.4, 2.6])
    goal = ttft.goal("time to first token p99", floor=2.2)
    assert goal.met is False
    assert goal.verdict == ("NOT MET (uncertain: on this device one pass over the 8 prompts costs 2.20x one "
                            "prompt's (floor table))")
    assert goal.measured.startswith("2.50x (10.0 vs 4.0 ms")


def test_a_gpu_like_floor_leaves_the_verdict_plain_and_split_rounds_are_still_said() -> None:
    met = first_tokens([5.0] * 100, [4.0] * 100, [1.2, 1.3]).goal("g", floor=1.05)
    assert met.verdict == "met"
    split = first_tokens([8.0] * 100, [4.0] * 100, [1.9, 2.1]).goal("g", floor=1.05)
    assert split.verdict == "met (uncertain: even and odd rounds give 1.90x and 2.10x)"
    both = first_tokens([8.0] * 100, [4.0] * 100, [1.9, 2.1]).goal("g", floor=1.9)
    assert both.doubt.count("; ") == 1
