"""Shared fixtures: sample datasets, a model folder, the tiny model, the fake worker, and the domain
service over the fake worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths, JobRunner
from modelforge_trainer.service import TrainerService
from modelforge_trainer.testing import FakeRegistrar, service_with_fakes

FAKE_WORKER = Path(__file__).parent / "fake_worker.py"


@pytest.fixture(autouse=True)
def _model_roots_in_test_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests build model folders in their temp dirs: those are the model roots (MODELFORGE_MODEL_ROOTS).
    monkeypatch.setenv("MODELFORGE_MODEL_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def chat_dataset(tmp_path: Path) -> Path:
    return write_jsonl(text_generation_rows(20, seed=1), tmp_path / "chat.jsonl")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The trainer's data dir (absolute, symlinks resolved, as the service resolves it)."""
    return tmp_path.resolve() / "data"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder that passes the model_name check (config.json only; nothing loads it)."""
    folder = tmp_path.resolve() / "base-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture(scope="session")
def tiny_causal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelforge_devkit.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny").resolve() / "tiny-llama", "causal")


@pytest.fixture
def fake_worker_command() -> list[str]:
    """Runs tests/fake_worker.py instead of the real worker: same protocol, no torch."""
    return [sys.executable, str(FAKE_WORKER)]


@pytest.fixture
def service(data_dir: Path, chat_dataset: Path, fake_worker_command: list[str]) -> TrainerService:
    paths = JobPaths(data_dir)
    runner = JobRunner(RecordingSink(), FakeRegistrar(), paths, stop_grace_s=5, worker_command=fake_worker_command)
    return service_with_fakes(paths, runner, {"chat.jsonl": chat_dataset})
