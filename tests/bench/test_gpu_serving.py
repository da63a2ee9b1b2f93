"""Issue 17's serving benchmark on a GPU (bench/gpu_serving.py, run by `make gpu-check`): without CUDA it
says so, exits 0 and writes nothing; the section's inference-svc is moved to the benchmark's device and
back (inference_on), checked on a stand-in for the stack that records what it is asked to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from bench import gpu_serving
from bench.common import cuda_available
from bench.serving import inference_on, stack_device

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU: the benchmark would run")
def test_without_a_gpu_it_says_so_exits_0_and_writes_nothing() -> None:
    before = gpu_serving.GPU_SERVING_MD.stat().st_mtime_ns if gpu_serving.GPU_SERVING_MD.exists() else None
    done = subprocess.run([sys.executable, "-m", "bench.gpu_serving"], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert gpu_serving.NO_GPU in done.stdout
    after = gpu_serving.GPU_SERVING_MD.stat().st_mtime_ns if gpu_serving.GPU_SERVING_MD.exists() else None
    assert after == before


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU: the benchmark would run")
def test_the_section_without_a_gpu_says_its_goal_was_not_measured() -> None:
    section = gpu_serving.run(context=cast(Any, None))  # not read without CUDA
    assert section.key == "gpu_serving"
    assert [goal.verdict for goal in section.goals] == ["not measured"]
    assert "first token" in section.goals[0].name
    assert "bench.gpu_serving" in section.markdown()


class RecordingStack:
    """What inference_on asks of the stack: stops and starts, with the device setting at each start."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.calls: list[tuple[str, str, str | None]] = []

    def stop_one(self, name: str) -> None:
        self.calls.append(("stop", name, self.env.get("MODELFORGE_INFERENCE_DEVICE")))

    def start_service(self, name: str) -> None:
        self.calls.append(("start", name, self.env.get("MODELFORGE_INFERENCE_DEVICE")))


def test_inference_svc_already_on_the_device_is_left_running() -> None:
    stack: Any = RecordingStack({"MODELFORGE_INFERENCE_DEVICE": "cpu"})
    with inference_on(stack, "cpu"):
        assert stack_device(stack) == "cpu"
    assert stack.calls == []


def test_inference_svc_elsewhere_is_restarted_on_the_device_then_as_it_was() -> None:
    stack: Any = RecordingStack({"MODELFORGE_INFERENCE_DEVICE": "cpu"})
    with inference_on(stack, "cuda:1"):
        assert stack.calls == [("stop", "inference", "cpu"), ("start", "inference", "cuda:1")]
    assert stack.calls[2:] == [("stop", "inference", "cuda:1"), ("start", "inference", "cpu")]
    assert stack.env == {"MODELFORGE_INFERENCE_DEVICE": "cpu"}


def test_an_unset_device_is_unset_again_afterwards_even_when_the_block_fails() -> None:
    stack: Any = RecordingStack({})
    elsewhere = "cpu" if stack_device(stack) != "cpu" else "cuda"
    with pytest.raises(RuntimeError), inference_on(stack, elsewhere):
        raise RuntimeError("the benchmark failed")
    assert [call[:2] for call in stack.calls] == [("stop", "inference"), ("start", "inference")] * 2
    assert stack.calls[1][2] == elsewhere
    assert "MODELFORGE_INFERENCE_DEVICE" not in stack.env
