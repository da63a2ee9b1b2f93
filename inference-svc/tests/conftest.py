"""Tiny model folders for the inference tests, built once per session (nothing downloaded).

Imports only torch/transformers/peft and devkit, so the GPU tests can run where the gRPC stack
is not installed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from modelforge_devkit.tiny_models import build_tiny_model
from modelforge_inference.domain import EXTRACTIVE_QA, SUMMARIZATION, TEXT_GENERATION, ModelRef


def sha256_map(folder: Path) -> dict[str, str]:
    """file -> sha256 for every file under `folder`, as the registry records them."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def build_lora_adapter(base: Path, out: Path, task_type: str = "CAUSAL_LM") -> Path:
    """A LoRA adapter for `base` with random (non-zero) B matrices, so it changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoTokenizer

    model_class = AutoModelForQuestionAnswering if task_type == "QUESTION_ANS" else AutoModelForCausalLM
    targets = ["query", "value"] if task_type == "QUESTION_ANS" else ["q_proj", "v_proj"]
    model = model_class.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, task_type=task_type, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def causal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("causal"), "causal")


@pytest.fixture(scope="session")
def seq2seq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("seq2seq"), "seq2seq")


@pytest.fixture(scope="session")
def qa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qa"), "qa")


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory, causal_model: Path) -> Path:
    return build_lora_adapter(causal_model, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture
def copy_folder(tmp_path: Path) -> Callable[[Path], Path]:
    """A private copy of a model folder, for tests that alter or delete files."""

    def copy(folder: Path) -> Path:
        return Path(shutil.copytree(folder, tmp_path / f"copy-{folder.parent.name}-{folder.name}"))

    return copy


@pytest.fixture(scope="session")
def sha_map() -> Callable[[Path], dict[str, str]]:
    return sha256_map


@pytest.fixture(scope="session")
def make_lora() -> Callable[..., Path]:
    return build_lora_adapter


@pytest.fixture
def refs(causal_model: Path, seq2seq_model: Path, qa_model: Path, lora_adapter: Path) -> dict[str, ModelRef]:
    """One ModelRef per kind of registered model, with the sha256 the registry would record."""
    return {
        "lora": ModelRef("lora-model", str(causal_model), str(lora_adapter), TEXT_GENERATION, "lora",
                         sha256_map(lora_adapter)),
        "full": ModelRef("full-model", str(causal_model), str(causal_model), TEXT_GENERATION, "full",
                         sha256_map(causal_model)),
        "seq2seq": ModelRef("t5-model", str(seq2seq_model), str(seq2seq_model), SUMMARIZATION, "full",
                            sha256_map(seq2seq_model)),
        "causal-summary": ModelRef("causal-summary", str(causal_model), str(lora_adapter), SUMMARIZATION, "lora",
                                   sha256_map(lora_adapter)),
        "qa": ModelRef("qa-model", str(qa_model), str(qa_model), EXTRACTIVE_QA, "full", sha256_map(qa_model)),
    }
