from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from modelforge_common.errors import AlreadyExists, FailedPrecondition
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.domain import GenerationParams, ModelRef
from modelforge_inference.merge import MergedModel, merge_adapter

GREEDY = GenerationParams(prompt="Tell me about the fox", max_new_tokens=12)


@pytest.fixture
def merged(refs: dict[str, ModelRef], tmp_path: Path) -> MergedModel:
    return merge_adapter(refs["lora"], tmp_path / "merged")


def test_merge_writes_a_standalone_full_weights_folder(merged: MergedModel, tmp_path: Path) -> None:
    assert (merged.path / "model.safetensors").is_file()
    assert not (merged.path / "adapter_config.json").exists()
    assert set(merged.file_sha256) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert merged.size_bytes == sum(p.stat().st_size for p in merged.path.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no staging folder left behind


async def test_merged_model_generates_what_base_plus_adapter_generates(
    merged: MergedModel, refs: dict[str, ModelRef]
) -> None:
    full = ModelRef("merged", str(merged.path), str(merged.path), refs["lora"].task, "full", merged.file_sha256)
    local = LocalBackend(2, 1 << 30, device="cpu")
    from_merged = await local.generate(full, GREEDY)
    from_adapter = await local.generate(refs["lora"], GREEDY)
    assert from_merged.generated_text == from_adapter.generated_text


def test_only_lora_adapters_are_merged(refs: dict[str, ModelRef], tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="already has full weights"):
        merge_adapter(refs["full"], tmp_path / "merged")


def test_an_existing_output_folder_is_not_overwritten(refs: dict[str, ModelRef], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AlreadyExists):
        merge_adapter(refs["lora"], out)
    assert (out / "keep.txt").read_text() == "mine"


def test_an_altered_adapter_is_not_merged(
    refs: dict[str, ModelRef], copy_folder: Callable[[Path], Path], tmp_path: Path
) -> None:
    folder = copy_folder(Path(refs["lora"].path))
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(FailedPrecondition, match="sha256 mismatch"):
        merge_adapter(dataclasses.replace(refs["lora"], path=str(folder)), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
