"""scripts/measure_peak_memory.py without a GPU: it measures nothing and says so; --plan lists the
cases with their estimates; the rows it writes are what calibration.py reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelforge_hardware.calibration import MeasuredRun

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "measure_peak_memory.py"


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)


def test_without_a_gpu_it_measures_nothing_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    done = run("--models", "qwen3-0.6b", "--out", str(out))
    assert done.returncode == 2
    assert "no CUDA device here: nothing measured" in done.stderr
    assert not out.exists()


def test_plan_lists_every_case_with_its_estimate() -> None:
    done = run("--plan", "--models", "qwen3-0.6b,mistral-7b-v0.3", "--providers", "huggingface,unsloth",
               "--strategies", "sft,dpo", "--quant", "4bit")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| qwen3") or line.startswith("| mistral")]
    # 2 models x (huggingface sft, huggingface dpo, unsloth sft): DPO runs on the huggingface recipe.
    assert len(rows) == 6
    assert all(float(row.rstrip(" |").rsplit("|", 1)[1]) > 1 for row in rows)


def test_unknown_model_is_a_usage_error() -> None:
    done = run("--plan", "--models", "gpt-5")
    assert done.returncode == 2 and "unknown models" in done.stderr


def test_a_written_row_reads_back_as_a_measured_run() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import measure_peak_memory as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    case = script.Case("gemma-3-1b", "unsloth", "sft", "4bit", 16, 2, 2048, True, 10)
    row = {**vars(case), "peak_reserved_gib": 2.5, "nvml_peak_used_gib": 3.8, "nvml_base_used_gib": 0.47,
           "how": {"date": "2026-12-06"}}
    run_back = MeasuredRun.from_json(json.loads(json.dumps(row)))
    assert (run_back.model, run_back.provider, run_back.measured_gib) == ("gemma-3-1b", "unsloth", 3.8)
    assert run_back.estimate().breakdown.total_bytes > 0
    assert script.estimate_gib(case) == pytest.approx(run_back.estimate().breakdown.total_bytes / (1 << 30))
