from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelforge_common.errors import FailedPrecondition, NotFound
from modelforge_inference.artifacts import estimate_weight_bytes, verify_artifacts
from modelforge_inference.domain import TEXT_GENERATION, ModelRef


def ref_for(folder: Path, shas: dict[str, str]) -> ModelRef:
    return ModelRef("m", "base", str(folder), TEXT_GENERATION, "lora", shas)


def test_unchanged_files_pass(lora_adapter: Path, sha_map: Callable[[Path], dict[str, str]]) -> None:
    verify_artifacts(ref_for(lora_adapter, sha_map(lora_adapter)))


def test_an_altered_file_is_refused(
    lora_adapter: Path, copy_folder: Callable[[Path], Path], sha_map: Callable[[Path], dict[str, str]]
) -> None:
    folder = copy_folder(lora_adapter)
    shas = sha_map(folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(FailedPrecondition, match=r"adapter_model.safetensors is altered \(sha256 mismatch\)"):
        verify_artifacts(ref_for(folder, shas))


def test_a_missing_file_is_refused(
    lora_adapter: Path, copy_folder: Callable[[Path], Path], sha_map: Callable[[Path], dict[str, str]]
) -> None:
    folder = copy_folder(lora_adapter)
    shas = sha_map(folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(FailedPrecondition, match=r"adapter_config\.json is missing"):
        verify_artifacts(ref_for(folder, shas))


def test_a_recorded_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret").write_text("x")
    with pytest.raises(FailedPrecondition, match="outside the model folder"):
        verify_artifacts(ref_for(folder, {"../secret": "0" * 64}))


def test_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="has no files"):
        verify_artifacts(ref_for(tmp_path / "gone", {}))


def test_weight_estimate_matches_the_loaded_parameters(causal_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(causal_model)
    loaded_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert estimate_weight_bytes(causal_model, 4) == loaded_bytes
    assert estimate_weight_bytes(causal_model, 2) == loaded_bytes // 2
    assert estimate_weight_bytes(causal_model / "nothing-here", 4) == 0
