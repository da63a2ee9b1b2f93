"""Model files on disk: the sha256 check that refuses altered or missing artifacts, and a size
estimate read from safetensors headers (no weights loaded) for the cache's memory budget."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from modelforge_common.errors import FailedPrecondition, NotFound
from modelforge_inference.domain import ModelRef

_CHUNK = 1024 * 1024
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_folder(ref: ModelRef) -> Path:
    """The model's folder; NotFound when it is gone (deleted, or the volume is not mounted)."""
    folder = Path(ref.path)
    if not ref.path or not folder.is_dir():
        raise NotFound(f"model {ref.model_id!r} has no files at {ref.path!r}")
    return folder


def verify_artifacts(ref: ModelRef) -> None:
    """Checks every file the registry recorded: present, inside the model folder, same sha256."""
    folder = model_folder(ref)
    root = folder.resolve()
    for relative, expected in sorted(ref.file_sha256.items()):
        candidate = (folder / relative).resolve()
        if not candidate.is_relative_to(root):
            raise FailedPrecondition(f"model artifact {relative} lies outside the model folder")
        if not candidate.is_file():
            raise FailedPrecondition(f"model artifact {relative} is missing")
        if sha256_file(candidate) != expected.strip().lower():
            raise FailedPrecondition(f"model artifact {relative} is altered (sha256 mismatch)")


def _safetensors_header(path: Path) -> dict[str, object]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, object] = json.loads(handle.read(length))
    return header


def estimate_weight_bytes(folder: Path, float_bytes: int | None) -> int:
    """Bytes the folder's weights take once loaded, with floating tensors cast to `float_bytes`
    per element (None keeps their stored width). Falls back to file sizes for non-safetensors
    checkpoints; 0 when the folder holds no weights (a Hub id, say)."""
    if not folder.is_dir():
        return 0
    total = 0
    safetensors_files = sorted(folder.glob("*.safetensors"))
    for file in safetensors_files:
        try:
            header = _safetensors_header(file)
        except (OSError, ValueError, struct.error):
            total += file.stat().st_size
            continue
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            dtype = str(info.get("dtype", ""))
            numel = 1
            for dim in info.get("shape", []):
                numel *= int(dim)
            width = float_bytes if float_bytes is not None and dtype in _FLOAT_DTYPES else _DTYPE_BYTES.get(dtype, 4)
            total += numel * width
    if not safetensors_files:
        total += sum(f.stat().st_size for f in folder.glob("*.bin"))
    return total
