"""Hub push against a small local server that speaks the Hub's create-repo, preupload and
commit routes; the server-side token must never surface in errors or logs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelforge_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from modelforge_common.testing import asgi_served, free_port
from modelforge_inference.domain import ModelRef
from modelforge_inference.hub import push_folder
from modelforge_inference.publishing import ModelPublisher

TOKEN = "hf_serverSideSecret123"


@dataclass
class FakeHub:
    url: str
    created: list[dict[str, Any]] = field(default_factory=list)
    committed: dict[str, bytes] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def _app(hub: FakeHub) -> Starlette:
    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def create_repo(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "Invalid credentials"}, status_code=401)
        body = await request.json()
        hub.created.append(body)
        return JSONResponse({"url": f"{hub.url}/{body['organization']}/{body['name']}"})

    async def preupload(request: Request) -> Response:
        files = (await request.json())["files"]
        return JSONResponse({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in files]})

    async def commit(request: Request) -> Response:
        repo = f"{request.path_params['namespace']}/{request.path_params['name']}"
        for line in (await request.body()).decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                hub.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return JSONResponse({"commitUrl": f"{hub.url}/{repo}/commit/abc123", "commitOid": "abc123",
                             "pullRequestUrl": None})

    async def validate_yaml(request: Request) -> Response:
        # README.md model cards are checked before a commit.
        return JSONResponse({"errors": [], "warnings": []})

    async def anything_else(request: Request) -> Response:
        hub.unknown.append(f"{request.method} {request.url.path}")
        return JSONResponse({"error": "not here"}, status_code=404)

    return Starlette(routes=[
        Route("/api/repos/create", create_repo, methods=["POST"]),
        Route("/api/models/{namespace}/{name}/preupload/{revision}", preupload, methods=["POST"]),
        Route("/api/models/{namespace}/{name}/commit/{revision}", commit, methods=["POST"]),
        Route("/api/validate-yaml", validate_yaml, methods=["POST"]),
        Route("/{path:path}", anything_else, methods=["GET", "POST", "PUT", "HEAD"]),
    ])


@pytest.fixture
async def fake_hub() -> AsyncIterator[FakeHub]:
    port = free_port()
    hub = FakeHub(url=f"http://127.0.0.1:{port}")
    async with asgi_served(_app(hub), port):
        yield hub


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00weights\x01")
    return folder


async def test_push_creates_the_repo_and_uploads_every_file(fake_hub: FakeHub, model_folder: Path) -> None:
    result = await asyncio.to_thread(
        push_folder, model_folder, "alice/tiny-model", token=TOKEN, private=True, endpoint=fake_hub.url
    )
    assert result.repo_url == f"{fake_hub.url}/alice/tiny-model"
    assert result.commit_url.endswith("/alice/tiny-model/commit/abc123")
    assert fake_hub.created[0]["name"] == "tiny-model"
    assert fake_hub.created[0]["organization"] == "alice"
    assert fake_hub.created[0]["visibility"] == "private"
    assert fake_hub.committed == {
        "adapter_config.json": b'{"r": 4}',
        "adapter_model.safetensors": b"\x00weights\x01",
    }
    assert TOKEN not in repr(result)
    assert fake_hub.unknown == []


async def test_a_rejected_token_is_permission_denied_and_never_shown(
    fake_hub: FakeHub, model_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "hf_wrongSecret456"
    with pytest.raises(PermissionDenied) as exc:
        await asyncio.to_thread(push_folder, model_folder, "alice/tiny-model", token=wrong, endpoint=fake_hub.url)
    assert wrong not in str(exc.value)
    assert exc.value.__cause__ is None
    assert wrong not in caplog.text


def test_an_unreachable_hub_is_unavailable_without_the_token(
    model_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match="cannot be reached") as exc:
        push_folder(model_folder, "alice/tiny-model", token=TOKEN, endpoint=endpoint)
    assert TOKEN not in str(exc.value)
    assert TOKEN not in caplog.text


def test_offline_mode_is_unavailable(model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Unavailable, match="offline mode"):
        push_folder(model_folder, "alice/tiny-model", token=TOKEN, endpoint="http://127.0.0.1:9")


def test_a_push_needs_a_server_token(model_folder: Path) -> None:
    with pytest.raises(FailedPrecondition, match="MODELFORGE_HF_TOKEN"):
        push_folder(model_folder, "alice/tiny-model", token=None)


@pytest.mark.parametrize("repo_id", ["", "alice/bad name", "a/b/c", "alice/--x"])
def test_a_bad_repo_name_is_invalid_argument(model_folder: Path, repo_id: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        push_folder(model_folder, repo_id, token=TOKEN)
    assert [v.field for v in exc.value.violations] == ["repo_name"]


def test_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        push_folder(tmp_path / "gone", "alice/tiny-model", token=TOKEN)


async def test_publisher_pushes_the_merged_model_and_cleans_up(
    fake_hub: FakeHub, refs: dict[str, ModelRef], tmp_path: Path
) -> None:
    publisher = ModelPublisher(tmp_path, TOKEN, fake_hub.url)
    result = await publisher.push(refs["lora"], "alice/merged", private=False, merge=True)
    assert result.repo_id == "alice/merged"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(fake_hub.committed)
    assert "adapter_config.json" not in fake_hub.committed
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_publisher_pushes_the_adapter_folder_as_registered(
    fake_hub: FakeHub, refs: dict[str, ModelRef], tmp_path: Path
) -> None:
    result = await ModelPublisher(tmp_path, TOKEN, fake_hub.url).push(
        refs["lora"], "alice/adapter", private=False, merge=False
    )
    assert result.repo_url.endswith("/alice/adapter")
    assert set(fake_hub.committed) == set(refs["lora"].file_sha256)


async def test_publisher_refuses_altered_artifacts_before_pushing(
    fake_hub: FakeHub, refs: dict[str, ModelRef], copy_folder: Callable[[Path], Path], tmp_path: Path
) -> None:
    folder = await asyncio.to_thread(copy_folder, Path(refs["lora"].path))
    await asyncio.to_thread((folder / "adapter_config.json").write_text, "{}")
    ref = dataclasses.replace(refs["lora"], path=str(folder))
    with pytest.raises(FailedPrecondition, match="sha256 mismatch"):
        await ModelPublisher(tmp_path, TOKEN, fake_hub.url).push(ref, "alice/x", private=False, merge=False)
    assert fake_hub.created == []


async def test_publisher_merges_only_inside_the_data_dir(refs: dict[str, ModelRef], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await asyncio.to_thread(data_dir.mkdir)
    publisher = ModelPublisher(data_dir, TOKEN)
    with pytest.raises(InvalidArgument) as exc:
        await publisher.merge(refs["lora"], str(tmp_path / "elsewhere"))
    assert [v.field for v in exc.value.violations] == ["output_path"]
    merged = await publisher.merge(refs["lora"], "models/merged-1")
    assert merged.path == (data_dir / "models" / "merged-1").resolve()
