"""Shared fixtures of the runtime's tests: a sample dataset and the tiny causal model (devkit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl


@pytest.fixture
def chat_dataset(tmp_path: Path) -> Path:
    return write_jsonl(text_generation_rows(20, seed=1), tmp_path / "chat.jsonl")


@pytest.fixture(scope="session")
def tiny_causal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelforge_devkit.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny").resolve() / "tiny-llama", "causal")
