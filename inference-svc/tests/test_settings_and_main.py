from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelforge_common.testing import free_port, wait_for_grpc_health
from modelforge_inference.__main__ import build_service
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.backends.tgi import TgiBackend
from modelforge_inference.settings import InferenceSettings


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFORGE_TGI_URL", "http://tgi:8080")
    monkeypatch.setenv("MODELFORGE_INFERENCE_MAX_MODELS", "3")
    monkeypatch.setenv("MODELFORGE_INFERENCE_MAX_BYTES", "1000000")
    monkeypatch.setenv("MODELFORGE_INFERENCE_DEFAULT_MAX_NEW_TOKENS", "64")
    settings = InferenceSettings()
    assert (settings.tgi_url, settings.inference_max_models, settings.inference_max_bytes) == (
        "http://tgi:8080", 3, 1_000_000)
    service = build_service(settings)
    assert isinstance(service.remote, TgiBackend)
    assert isinstance(service.local, LocalBackend)
    assert service.local.cache.max_items == 3
    assert service.default_max_new_tokens == 64


def test_without_a_tgi_url_everything_runs_locally() -> None:
    service = build_service(InferenceSettings(tgi_url=None))
    assert service.remote is None
    assert service.backend_for("text-generation") is service.local


def test_settings_refuse_an_empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFORGE_INFERENCE_MAX_MODELS", "0")
    with pytest.raises(ValueError, match="inference_max_models"):
        InferenceSettings()


def test_the_entrypoint_serves_health_on_its_address(tmp_path: os.PathLike[str]) -> None:
    port = free_port()
    env = {**os.environ, "MODELFORGE_INFERENCE_ADDR": f"127.0.0.1:{port}", "MODELFORGE_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "modelforge_inference"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=60)
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
