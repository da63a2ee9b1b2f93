"""Finds a model by name: a local model folder, or a Hugging Face Hub repo (only config.json and the
repo's metadata are ever fetched, never weights).

Every Hub request has a short timeout, and huggingface_hub's retry path (a 60 s retry after a
failed HEAD) is never entered: model_info answers first whether the Hub is reachable and the repo
readable, and config.json comes from the local cache when it cannot be fetched. HF_HUB_OFFLINE is
read on every call, so the cache is all an offline pod uses.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # a lazy re-export mypy cannot see

from modelforge.v1 import hardware_pb2
from modelforge_common.errors import FieldViolation, InvalidArgument, PermissionDenied, Unavailable
from modelforge_common.model_paths import model_roots as configured_model_roots
from modelforge_common.model_paths import resolve_local_model

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
TRUE_WORDS = {"1", "on", "yes", "true"}


def _network_errors() -> tuple[type[BaseException], ...]:
    """Errors of the HTTP client huggingface_hub runs on (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


NETWORK_ERRORS = _network_errors()


def hub_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in TRUE_WORDS for name in names)


def not_accessible(name: str) -> PermissionDenied:
    return PermissionDenied(f"Model {name} is not accessible. Please check if it exists and you have permissions.")


def hub_unreachable(reason: object) -> Unavailable:
    return Unavailable(f"Hugging Face Hub cannot be reached: {reason}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(
            f"cannot read {path}: {exc}", [FieldViolation("model_name", f"{path.name} is not readable JSON")]
        ) from exc
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"{path} is not a JSON object", [FieldViolation("model_name", f"{path.name} is malformed")]
        )
    return data


def _namespace(repo_id: str) -> str:
    return repo_id.split("/")[0] if "/" in repo_id else ""


def _architecture(config: dict[str, Any]) -> str:
    architectures = config.get("architectures")
    return str(architectures[0]) if isinstance(architectures, list) and architectures else ""


@dataclass
class ModelSource:
    data_dir: Path
    timeout_s: float = 5.0
    endpoint: str | None = None
    cache_dir: Path | None = None
    offline: Callable[[], bool] = hub_offline
    # None: read MODELFORGE_MODEL_ROOTS (default: the data dir and the working directory) per call.
    model_roots: tuple[Path, ...] | None = None

    def local_folder(self, name: str) -> Path | None:
        """The folder `name` points to inside the model roots (MODELFORGE_MODEL_ROOTS): a path as given,
        else one inside the data dir; None for a Hub id. A path that is not an allowed folder raises
        InvalidArgument with one message, whether it exists or not."""
        roots = self.model_roots if self.model_roots is not None else configured_model_roots(self.data_dir)
        return resolve_local_model(name, roots, data_dir=self.data_dir)

    def _repo_id(self, name: str) -> str:
        try:
            validate_repo_id(name)
        except HFValidationError as exc:
            raise InvalidArgument(
                f"{name!r} is neither a local model folder nor a Hugging Face Hub id",
                [FieldViolation("model_name", "must be a local model folder or a Hub id such as org/model")],
            ) from exc
        return name

    def _api(self) -> HfApi:
        return HfApi(endpoint=self.endpoint)

    # --- config.json -----------------------------------------------------------------------------

    def load_config(self, name: str) -> dict[str, Any]:
        """config.json of a local folder (or of a LoRA adapter folder's base model) or Hub repo."""
        name = name.strip()
        if not name:
            raise InvalidArgument("model_name is required", [FieldViolation("model_name", "is required")])
        folder = self.local_folder(name)
        if folder is not None:
            return self._local_config(folder)
        return self._hub_config(self._repo_id(name))

    def _local_config(self, folder: Path, follow_adapter: bool = True) -> dict[str, Any]:
        if (folder / CONFIG_FILE).is_file():
            return _read_json(folder / CONFIG_FILE)
        if follow_adapter and (folder / ADAPTER_CONFIG_FILE).is_file():
            base = _read_json(folder / ADAPTER_CONFIG_FILE).get("base_model_name_or_path")
            if isinstance(base, str) and base.strip():
                base_folder = self.local_folder(base)
                if base_folder is not None:
                    return self._local_config(base_folder, follow_adapter=False)
                return self._hub_config(self._repo_id(base))
        raise InvalidArgument(
            f"{folder} has no {CONFIG_FILE}",
            [FieldViolation("model_name", f"the folder has no {CONFIG_FILE} (not a transformers model folder)")],
        )

    def _cached_config(self, repo_id: str) -> dict[str, Any] | None:
        cached = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=self.cache_dir)
        return _read_json(Path(cached)) if isinstance(cached, str) else None

    def _hub_config(self, repo_id: str) -> dict[str, Any]:
        if self.offline():
            cached = self._cached_config(repo_id)
            if cached is None:
                raise hub_unreachable(f"offline mode (HF_HUB_OFFLINE) and {repo_id} is not in the local cache")
            return cached
        try:
            self._api().model_info(repo_id, timeout=self.timeout_s)
        except NETWORK_ERRORS as exc:
            error = self._hub_error(repo_id, exc)
            cached = self._cached_config(repo_id) if isinstance(error, Unavailable) else None
            if cached is None:
                raise error from exc
            log.info("Hub unreachable (%s); using the cached config.json of %s", exc, repo_id)
            return cached
        try:
            path = hf_hub_download(
                repo_id, CONFIG_FILE, endpoint=self.endpoint, cache_dir=self.cache_dir, etag_timeout=self.timeout_s
            )
        except NETWORK_ERRORS as exc:
            raise self._hub_error(repo_id, exc) from exc
        return _read_json(Path(path))

    def _hub_error(self, repo_id: str, exc: BaseException) -> Exception:
        """The domain error for a failed Hub call (the order matters: HTTP errors are OSErrors)."""
        if isinstance(exc, RepositoryNotFoundError):  # GatedRepoError is one too
            return not_accessible(repo_id)
        if isinstance(exc, RemoteEntryNotFoundError):
            return InvalidArgument(
                f"{repo_id} has no {CONFIG_FILE}",
                [FieldViolation("model_name", f"the repo has no {CONFIG_FILE} (not a transformers model)")],
            )
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                return not_accessible(repo_id)
            return hub_unreachable(f"HTTP {status}")
        if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError):
            return hub_unreachable(exc)
        return hub_unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    # --- description ---------------------------------------------------------------------------

    def describe(self, name: str) -> hardware_pb2.DescribeModelResponse:
        """The model's DescribeModel answer (the message itself: no copy of its fields here)."""
        name = name.strip()
        if not name:
            raise InvalidArgument("model_name is required", [FieldViolation("model_name", "is required")])
        folder = self.local_folder(name)
        if folder is not None:
            config = self._local_config(folder)
            return hardware_pb2.DescribeModelResponse(id=name, local=True, architecture=_architecture(config))
        repo_id = self._repo_id(name)
        if self.offline():
            # A pod without egress can still use what the cache holds.
            cached = self._cached_config(repo_id)
            if cached is None:
                raise hub_unreachable(f"offline mode (HF_HUB_OFFLINE) and {repo_id} is not in the local cache")
            return hardware_pb2.DescribeModelResponse(
                id=repo_id, author=_namespace(repo_id), architecture=_architecture(cached)
            )
        try:
            info = self._api().model_info(repo_id, timeout=self.timeout_s)
            if info.gated:
                self._check_gated_access(repo_id)
        except NETWORK_ERRORS as exc:
            raise self._hub_error(repo_id, exc) from exc
        config = info.config if isinstance(info.config, dict) else {}
        return hardware_pb2.DescribeModelResponse(
            id=str(info.id),
            author=str(info.author or _namespace(repo_id)),
            downloads=int(info.downloads or 0),
            likes=int(info.likes or 0),
            architecture=_architecture(config),
            gated=bool(info.gated),
        )

    def _check_gated_access(self, repo_id: str) -> None:
        """A gated repo's metadata is public; whether our token may read its files is not."""
        url = hf_hub_url(repo_id, CONFIG_FILE, endpoint=self.endpoint)
        try:  # raises GatedRepoError without access
            get_hf_file_metadata(url, timeout=self.timeout_s, endpoint=self.endpoint)
        except RemoteEntryNotFoundError:
            return  # readable, just without a config.json (GGUF-only repos)
