"""Model look-ups: local folders, and a Hub that answers, refuses, is offline, down or silent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelforge_common.errors import InvalidArgument, PermissionDenied, Unavailable
from modelforge_hardware.model_source import ModelSource

from .conftest import SPEC_MESSAGE, TINY_LLAMA, FakeHub, write_model_folder


@pytest.fixture
def source(tmp_path: Path) -> ModelSource:
    return ModelSource(data_dir=tmp_path / "data", timeout_s=2.0, cache_dir=tmp_path / "hf-cache")


@pytest.fixture
def hub_source(tmp_path: Path, fake_hub: FakeHub) -> ModelSource:
    fake_hub.repos["acme/tiny-llama"] = TINY_LLAMA
    fake_hub.repos["meta-llama/gated"] = TINY_LLAMA
    fake_hub.gated.add("meta-llama/gated")
    fake_hub.repos["acme/busy"] = TINY_LLAMA
    fake_hub.failing.add("acme/busy")
    return ModelSource(
        data_dir=tmp_path / "data", timeout_s=2.0, endpoint=fake_hub.url, cache_dir=tmp_path / "hf-cache"
    )


def test_local_folder(source: ModelSource, tiny_model_dir: Path) -> None:
    assert source.load_config(str(tiny_model_dir)) == TINY_LLAMA
    described = source.describe(str(tiny_model_dir))
    assert (described.local, described.architecture, described.id) == (True, "LlamaForCausalLM", str(tiny_model_dir))


def test_folder_inside_the_data_dir(source: ModelSource) -> None:
    write_model_folder(source.data_dir / "models" / "mine", TINY_LLAMA)
    assert source.describe("models/mine").local


def test_adapter_folder_is_sized_by_its_base(source: ModelSource, tmp_path: Path, tiny_model_dir: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert source.load_config(str(adapter)) == TINY_LLAMA


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_folder_without_a_readable_config(source: ModelSource, tmp_path: Path, content: str | None) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    if content is not None:
        (folder / "config.json").write_text(content)
    with pytest.raises(InvalidArgument) as raised:
        source.describe(str(folder))
    assert [v.field for v in raised.value.violations] == ["model_name"]


@pytest.mark.parametrize("name", ["", "   ", "/no/such/folder", "not a repo!", "a/b/c"])
def test_names_that_are_neither_folder_nor_hub_id(source: ModelSource, name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        source.load_config(name)
    assert [v.field for v in raised.value.violations] == ["model_name"]


def test_hub_repo_is_described(hub_source: ModelSource) -> None:
    described = hub_source.describe("acme/tiny-llama")
    assert described.id == "acme/tiny-llama"
    assert (described.author, described.downloads, described.likes) == ("acme", 1234, 56)
    assert (described.local, described.gated, described.architecture) == (False, False, "LlamaForCausalLM")


@pytest.mark.parametrize("repo", ["acme/missing", "meta-llama/gated"])
def test_missing_or_gated_repo_is_not_accessible(hub_source: ModelSource, repo: str) -> None:
    for call in (hub_source.describe, hub_source.load_config):
        with pytest.raises(PermissionDenied) as raised:
            call(repo)
        assert raised.value.message == SPEC_MESSAGE.format(repo)


def test_config_comes_from_the_hub_then_from_the_cache(
    hub_source: ModelSource, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hub_source.load_config("acme/tiny-llama") == TINY_LLAMA
    assert any("/resolve/main/config.json" in r for r in fake_hub.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hub.requests.clear()
    assert hub_source.load_config("acme/tiny-llama") == TINY_LLAMA
    described = hub_source.describe("acme/tiny-llama")
    assert (described.id, described.architecture, described.local) == ("acme/tiny-llama", "LlamaForCausalLM", False)
    assert fake_hub.requests == []


def test_offline_without_cache_is_unavailable(
    hub_source: ModelSource, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (hub_source.describe, hub_source.load_config):
        with pytest.raises(Unavailable, match="Hugging Face Hub cannot be reached: offline mode"):
            call("acme/tiny-llama")
    assert fake_hub.requests == []


def test_hub_outage_is_unavailable(hub_source: ModelSource) -> None:
    with pytest.raises(Unavailable, match="HTTP 503"):
        hub_source.describe("acme/busy")
    with pytest.raises(Unavailable):
        hub_source.load_config("acme/busy")


def test_refused_connection_is_unavailable(tmp_path: Path, closed_port_url: str) -> None:
    source = ModelSource(data_dir=tmp_path, timeout_s=2.0, endpoint=closed_port_url, cache_dir=tmp_path / "c")
    for call in (source.describe, source.load_config):
        with pytest.raises(Unavailable, match="Hugging Face Hub cannot be reached"):
            call("acme/tiny-llama")


def test_silent_hub_times_out(tmp_path: Path, silent_server_url: str) -> None:
    source = ModelSource(data_dir=tmp_path, timeout_s=0.3, endpoint=silent_server_url, cache_dir=tmp_path / "c")
    for call in (source.describe, source.load_config):
        with pytest.raises(Unavailable, match="Hugging Face Hub cannot be reached"):
            call("acme/tiny-llama")


@pytest.mark.parametrize("name", ["~nosuchuser", "/" + "a" * 300, "/proc/1/root", "/etc", "/no/such/folder"])
def test_paths_outside_the_model_roots_are_refused_alike(source: ModelSource, name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        source.describe(name)
    assert [v.field for v in raised.value.violations] == ["model_name"]
    assert "MODELFORGE_MODEL_ROOTS" in raised.value.message
    with pytest.raises(InvalidArgument):
        source.load_config(name)
