"""Fixtures for hardware-svc tests: recorded machines, model configs, a fake Hugging Face Hub on a
loopback port, and a real grpc.aio server on port 0."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelforge.v1 import hardware_pb2, hardware_pb2_grpc
from modelforge_common.grpc_server import build_server, mark_serving, service_name
from modelforge_common.ports import free_port
from modelforge_hardware.model_source import ModelSource
from modelforge_hardware.recommendations import Recommendations
from modelforge_hardware.recorded import RECORDED, FakeGpuProbe, FakeSystemProbe
from modelforge_hardware.service import HardwareService
from modelforge_hardware.servicer import HardwareServicer

# Llama-3.1-8B's config.json (the fields that size it).
LLAMA_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
LLAMA_70B: dict[str, Any] = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
TINY_LLAMA: dict[str, Any] = {
    **LLAMA_8B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 400,
}
SPEC_MESSAGE = "Model {} is not accessible. Please check if it exists and you have permissions."
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def llama_8b() -> dict[str, Any]:
    return dict(LLAMA_8B)


def write_model_folder(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    return write_model_folder(tmp_path / "tiny-llama", TINY_LLAMA)


@pytest.fixture(autouse=True)
def _hub_online_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests choose offline mode themselves; a developer's HF_HUB_OFFLINE must not change results.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture(autouse=True)
def _model_roots_in_test_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests build model folders in their temp dirs: those are the model roots (MODELFORGE_MODEL_ROOTS).
    monkeypatch.setenv("MODELFORGE_MODEL_ROOTS", str(tmp_path_factory.getbasetemp()))


# --- a fake Hub --------------------------------------------------------------------------------------


@dataclass
class FakeHub:
    url: str
    # repo id -> config.json; repos in `gated` refuse file access.
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    # repos whose every request answers 503 (a Hub outage).
    failing: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            path = self.path.split("?")[0]
            if any(repo in path for repo in hub.failing):
                return self._send(503, b"busy")
            if path.startswith("/api/models/"):
                repo = path.removeprefix("/api/models/")
                if repo not in hub.repos:
                    return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                info = {
                    "id": repo,
                    "author": repo.split("/")[0],
                    "downloads": 1234,
                    "likes": 56,
                    "gated": "manual" if repo in hub.gated else False,
                    "private": False,
                    "config": {"architectures": hub.repos[repo].get("architectures", [])},
                }
                return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
            if "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                if repo not in hub.repos:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
                if repo in hub.gated:
                    return self._send(403, b"", {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
                if not rest.endswith("/config.json"):
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                body = json.dumps(hub.repos[repo]).encode()
                return self._send(200, body, {"X-Repo-Commit": COMMIT, "ETag": f'"etag-{len(body)}"'})
            return self._send(404)

        do_GET = _route  # noqa: N815 - BaseHTTPRequestHandler's names
        do_HEAD = _route  # noqa: N815

    return Handler


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_server_url() -> Iterator[str]:
    """A loopback server that accepts connections and never answers (a stalled Hub)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# --- the service --------------------------------------------------------------------------------------


ServiceFactory = Callable[..., HardwareService]


@pytest.fixture
def make_service(tmp_path: Path) -> ServiceFactory:
    """HardwareService on a recorded machine; Hub endpoint and timeout per test."""

    def make(
        machine: str = "rtx3070",
        endpoint: str | None = None,
        timeout_s: float = 2.0,
        torch: str = "2.1.0",
    ) -> HardwareService:
        recorded = RECORDED[machine]
        models = ModelSource(
            data_dir=tmp_path / "data", timeout_s=timeout_s, endpoint=endpoint, cache_dir=tmp_path / "hf-cache"
        )
        return HardwareService(
            FakeGpuProbe(recorded.gpus),
            FakeSystemProbe(recorded.system),
            Recommendations.load(),
            models,
            read_torch_version=lambda: torch,
        )

    return make


@dataclass
class RunningServer:
    stub: hardware_pb2_grpc.HardwareServiceStub
    channel: grpc.aio.Channel
    port: int


@pytest.fixture
def serve_hardware() -> Callable[[HardwareService], Any]:
    """Starts the real grpc.aio server (health, reflection, error interceptor) on port 0."""

    @contextlib.asynccontextmanager
    async def running(service: HardwareService) -> AsyncIterator[RunningServer]:
        name = service_name(hardware_pb2, "HardwareService")
        server, port, health = build_server(
            [(hardware_pb2_grpc.add_HardwareServiceServicer_to_server, HardwareServicer(service), name)],
            "127.0.0.1:0",
        )
        await server.start()
        await mark_serving(health, [name])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield RunningServer(hardware_pb2_grpc.HardwareServiceStub(channel), channel, port)
        finally:
            await server.stop(None)

    return running
