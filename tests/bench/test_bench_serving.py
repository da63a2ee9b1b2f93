"""bench/serving.py is part of `make bench`. Its section's tables and goals are checked in
test_bench_smoke.py, on the one `python -m bench --quick` run the suite pays for."""

from __future__ import annotations

from pathlib import Path


def test_the_section_is_registered_in_make_bench() -> None:
    from bench.__main__ import BENCHMARKS

    assert "serving" in BENCHMARKS
    assert Path(__file__).resolve().parents[2].joinpath("bench", "serving.py").is_file()
