"""Merge and Hub push as the service offers them: paths kept inside the data directory, the
artifacts verified before anything leaves, blocking work in worker threads."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_inference.artifacts import verify_artifacts
from modelforge_inference.domain import ModelRef
from modelforge_inference.hub import PushResult, check_repo_id, push_folder
from modelforge_inference.merge import MergedModel, merge_adapter


class ModelPublisher:
    def __init__(self, data_dir: Path, hf_token: str | None, hf_endpoint: str | None = None) -> None:
        self._data_dir = data_dir.resolve()
        self._hf_token = hf_token
        self._hf_endpoint = hf_endpoint

    def _inside_data_dir(self, path: str) -> Path:
        candidate = Path(path)
        resolved = (candidate if candidate.is_absolute() else self._data_dir / candidate).resolve()
        if not path or not resolved.is_relative_to(self._data_dir):
            message = f"the output folder must lie inside the data directory {self._data_dir}"
            raise InvalidArgument(message, [FieldViolation("output_path", message)])
        return resolved

    async def merge(self, ref: ModelRef, output_path: str) -> MergedModel:
        """Writes base + LoRA adapter merged into `output_path` (relative paths are taken from
        the data directory)."""
        out_dir = self._inside_data_dir(output_path)
        return await asyncio.to_thread(merge_adapter, ref, out_dir)

    async def push(
        self, ref: ModelRef, repo_name: str, *, private: bool, merge: bool, commit_message: str = ""
    ) -> PushResult:
        """Pushes the model's folder (or, with `merge`, its adapter merged into the base) to the Hub."""
        repo_id = check_repo_id(repo_name)
        message = commit_message or f"Upload {ref.model_id} from ModelForge"
        return await asyncio.to_thread(self._push_blocking, ref, repo_id, private, merge, message)

    def _push_blocking(self, ref: ModelRef, repo_id: str, private: bool, merge: bool, message: str) -> PushResult:
        def push(folder: Path) -> PushResult:
            return push_folder(
                folder, repo_id, token=self._hf_token, private=private, endpoint=self._hf_endpoint,
                commit_message=message,
            )

        if merge and ref.adapter_type == "lora":
            with tempfile.TemporaryDirectory(prefix="merge-", dir=self._data_dir) as scratch:
                merged = merge_adapter(ref, Path(scratch) / "merged")
                return push(merged.path)
        verify_artifacts(ref)
        return push(Path(ref.path))
