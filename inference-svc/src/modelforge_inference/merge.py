"""Merging a LoRA adapter into its base model: a standalone full-weights folder (safetensors +
tokenizer) that loads without peft, e.g. for TGI or a Hub push. Blocking and memory-hungry (the
whole base model in its own dtype, on the CPU): run it in a worker thread."""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from modelforge_common.errors import AlreadyExists, FailedPrecondition
from modelforge_inference.artifacts import sha256_file
from modelforge_inference.domain import ModelRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergedModel:
    path: Path
    # file -> sha256, as the registry records artifacts.
    file_sha256: dict[str, str]
    size_bytes: int


def merge_adapter(ref: ModelRef, out_dir: Path) -> MergedModel:
    """Loads base + adapter (artifacts verified first), merges the LoRA weights into the base
    (peft merge_and_unload) and writes the result to `out_dir`, which must not exist yet or be
    empty. The folder appears whole or not at all."""
    if ref.adapter_type != "lora":
        raise FailedPrecondition(f"model {ref.model_id!r} already has full weights; only LoRA adapters are merged")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise AlreadyExists(f"{out_dir} already holds files")
    from modelforge_inference.backends.hf_models import load_weights

    model, tokenizer, _config = load_weights(ref, "cpu", "auto")
    merged = model.merge_and_unload()
    staging = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    result = MergedModel(
        path=out_dir,
        file_sha256={str(p.relative_to(out_dir)): sha256_file(p) for p in files},
        size_bytes=sum(p.stat().st_size for p in files),
    )
    log.info("merged adapter of %s into %s (%d bytes)", ref.model_id, out_dir, result.size_bytes)
    return result
