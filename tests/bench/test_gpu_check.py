"""`make gpu-check` (bench/gpu_check.py): without a GPU it says so, exits 0 and leaves GPU.md alone; with
one it writes GPU.md from its measurements (the writer is checked here on given figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import cuda_available
from bench.gpu_check import NO_GPU, Side, render

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path) -> None:
    output = tmp_path / "GPU.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--output", str(output)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert NO_GPU in done.stdout
    assert not output.exists()


def test_gpu_md_holds_the_estimate_against_the_peak_and_tokens_per_s_against_plain_scripts() -> None:
    sides = [
        Side("ModelForge, huggingface provider", 6000.0, 4.0, 4.2),
        Side("ModelForge, unsloth provider", 9000.0, 3.0, 2.9),
        Side("plain trl script", 6200.0, 3.9),
        Side("plain unsloth", 9100.0, 2.9),
    ]
    text = render("NVIDIA H100 80GB HBM3", "llama-3.2-1b QLoRA r=16, 4 x 512", sides, "2026-12-06 01:00 UTC", [])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ModelForge") or line.startswith("| plain")}

    assert "on NVIDIA H100 80GB HBM3" in text
    assert rows["ModelForge, huggingface provider"] == ["6000", "0.97x", "4.00", "4.20", "1.050"]
    assert rows["ModelForge, unsloth provider"][1] == "1.45x"
    assert rows["plain trl script"] == ["6200", "1.00x", "3.90", "-", "-"]
