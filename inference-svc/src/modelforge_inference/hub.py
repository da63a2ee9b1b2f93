"""Pushing a model folder to the Hugging Face Hub with the server's own token.

The token comes from the server's settings only; it is never logged, never part of an error
message and never returned. Without Hub access (offline mode, no route) the push fails with
Unavailable and a message that says so. Blocking: run it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # lazily exported, unseen by mypy

from modelforge_common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    repo_url: str
    commit_url: str


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def check_repo_id(repo_id: str) -> str:
    """"name" or "namespace/name" as the Hub accepts them; InvalidArgument("repo_name") otherwise."""
    candidate = repo_id.strip()
    try:
        validate_repo_id(candidate)
    except HFValidationError as exc:
        raise InvalidArgument(
            f"invalid Hub repository name {repo_id!r}", [FieldViolation("repo_name", str(exc))]
        ) from exc
    if not candidate:
        raise InvalidArgument("a Hub repository name is required", [FieldViolation("repo_name", "required")])
    return candidate


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str | None,
    private: bool = False,
    endpoint: str | None = None,
    commit_message: str = "Upload model from ModelForge",
) -> PushResult:
    """Creates the repository if needed and uploads every file of `folder` in one commit."""
    repo_id = check_repo_id(repo_id)
    if not token:
        raise FailedPrecondition(
            "pushing to the Hugging Face Hub needs a token configured on the server (MODELFORGE_HF_TOKEN)"
        )
    if not folder.is_dir():
        raise NotFound(f"model files not found at {folder}")
    hub_url = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    api = HfApi(endpoint=hub_url, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message
        )
    except OfflineModeIsEnabled:
        raise Unavailable("the Hugging Face Hub cannot be reached: this server runs in offline mode") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        detail = _scrub(str(exc).splitlines()[0] if str(exc) else "", token)
        if status == 401:
            raise PermissionDenied("the server's Hugging Face token was rejected") from None
        if status == 403:
            raise PermissionDenied(f"the server's Hugging Face token may not write to {repo_id}") from None
        if status in (400, 422):
            message = f"the Hub refused the push: {detail}"
            raise InvalidArgument(message, [FieldViolation("repo_name", detail)]) from None
        raise Unavailable(f"the Hugging Face Hub answered HTTP {status}: {detail}") from None
    except (httpx2.TransportError, ConnectionError) as exc:
        detail = _scrub(type(exc).__name__, token)
        raise Unavailable(f"the Hugging Face Hub at {hub_url} cannot be reached ({detail})") from None
    log.info("pushed %s to %s", folder, repo_id)
    return PushResult(repo_id=repo_id, repo_url=str(repo_url), commit_url=str(commit.commit_url))
