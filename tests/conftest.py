"""Cross-service fixtures: a real stack (nats-server, four services, gateway) on free ports."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modelforge_devkit.stack import Stack, private_env
from modelforge_devkit.tiny_models import build_tiny_model

# The steps the test modules share (tests/stack_api.py); this folder is not a package.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
from stack_api import gateway_client, running_stack

# Model folders the tests build live under pytest's base temp dir: the stacks' model roots.
_MODEL_ROOTS: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _model_roots_in_test_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    _MODEL_ROOTS[:] = [str(tmp_path_factory.getbasetemp())]


def stack_env(data_dir: Path) -> dict[str, str]:
    return private_env(data_dir, {
        "MODELFORGE_MODEL_ROOTS": os.pathsep.join([*_MODEL_ROOTS, str(data_dir)]),
        "MODELFORGE_RUN_DIR": str(data_dir / "run"),
    })


@pytest.fixture(scope="session")
def tiny_causal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "causal")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(stack_env(tmp_path_factory.mktemp("stack"))) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    """The gateway of the module's `stack` (this file's, or the module's own with its settings)."""
    with gateway_client(stack) as http:
        yield http


@pytest.fixture(scope="session")
def stack_env_for() -> Callable[[Path], dict[str, str]]:
    """stack_env for tests that start a stack of their own (extra MODELFORGE_* settings)."""
    return stack_env
