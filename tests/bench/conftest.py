"""The benchmarks are the repository's top-level `bench` package, not an installed one: put the
repository root on sys.path so `.venv/bin/pytest tests/bench/...` imports it as `python -m pytest`
(which adds the working directory) and `make test` do."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
HERE = str(Path(__file__).resolve().parent)  # bench_report, the report reader the tests share
for folder in (ROOT, HERE):
    if folder not in sys.path:
        sys.path.insert(0, folder)
