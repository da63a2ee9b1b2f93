"""The estimate's accuracy is shown, not claimed: docs/estimate.md's table is the one the measured runs
give today, and the per-tensor activation formula matches what autograd really keeps (counted on the
CPU with saved-tensor hooks by scripts/saved_activations.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_the_documented_table_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "estimate_table.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# hardware-svc itself never imports torch; the count needs it (the repository's venv has it).
NEEDS_TORCH = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("torch", "transformers", "peft")),
    reason="counting saved tensors needs torch, transformers and peft",
)


@NEEDS_TORCH
@pytest.mark.parametrize(
    "arguments",
    [
        ["--hidden", "256", "--intermediate", "688", "--heads", "4", "--kv-heads", "2", "--head-dim", "64"],
        ["--model", "qwen3-0.6b", "--tokens", "40"],  # q/k norms
    ],
    ids=["llama-style", "qwen3-0.6b"],
)
def test_the_activation_formula_matches_the_tensors_autograd_keeps(arguments: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "saved_activations.py"), *arguments],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["formula_bytes_per_token"] == pytest.approx(result["counted_bytes_per_token"], rel=0.05), result
