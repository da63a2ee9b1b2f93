"""Issue 5's shipping paths through the real processes: merge a LoRA adapter into its base as a new
registered model the playground loads without peft, and a Hub push that fails clearly without a
network and never shows the server's token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from stack_api import gateway_client, running_stack

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HF_TOKEN = "hf_e2eSecretTokenThatMustNeverLeak"


@pytest.fixture(scope="module")
def hub_stack(
    tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("hub-stack")
    # HF_HUB_OFFLINE=1 (from stack_env) is how these machines run: no route to the Hub.
    env = stack_env_for(data_dir) | {"MODELFORGE_HF_TOKEN": HF_TOKEN}
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def client(hub_stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(hub_stack, timeout=120) as http:
        yield http


def build_adapter(base: Path, out: Path) -> None:
    """A LoRA adapter with random, non-zero B matrices, so merging visibly changes the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                        init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


@pytest.fixture(scope="module")
def adapter_model(hub_stack: Stack, tiny_causal_model: Path) -> registry_pb2.Model:
    """A LoRA adapter registered the way the trainer registers one (straight to registry-svc)."""
    folder = Path(hub_stack.env["MODELFORGE_DATA_DIR"]) / "models" / "hand-made-adapter"
    build_adapter(tiny_causal_model, folder)
    with grpc.insecure_channel(hub_stack.addr("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        record = registry_pb2.Model(
            name="hand-made", base_model=str(tiny_causal_model), task="text-generation", strategy="sft",
            provider="huggingface", path=str(folder), adapter_type="lora", job_id="job-hand-made",
        )
        return stub.RegisterModel(registry_pb2.RegisterModelRequest(model=record), timeout=30).model


def greedy(client: httpx.Client, model_id: str) -> str:
    response = client.post("/api/playground/generate", json={
        "model_id": model_id, "prompt": "Tell me about tiny models", "max_length": 16, "temperature": 0.0,
    })
    assert response.status_code == 200, response.text
    text: str = response.json()["generated_text"]
    return text


def test_merge_registers_standalone_weights_that_generate_like_the_adapter(
    client: httpx.Client, adapter_model: registry_pb2.Model, hub_stack: Stack
) -> None:
    response = client.post(f"/api/models/{adapter_model.model_id}/merge", json={"name": "hand-made-merged"})
    assert response.status_code == 201, response.text
    merged = response.json()
    assert merged["merged_from"] == adapter_model.model_id
    assert merged["adapter_type"] == "full"
    assert merged["name"] == "hand-made-merged"
    assert merged["model_id"] != adapter_model.model_id
    assert merged["base_model"] == adapter_model.base_model
    folder = Path(merged["path"])
    data_dir = Path(hub_stack.env["MODELFORGE_DATA_DIR"]).resolve()
    assert folder.resolve().is_relative_to(data_dir)
    assert any(p.suffix == ".safetensors" for p in folder.iterdir())
    assert not (folder / "adapter_config.json").exists()

    listed = {m["model_id"] for m in client.get("/api/models").json()["models"]}
    assert {adapter_model.model_id, merged["model_id"]} <= listed
    assert greedy(client, merged["model_id"]) == greedy(client, adapter_model.model_id)

    # Full weights have nothing left to merge; an unknown model is a 404.
    again = client.post(f"/api/models/{merged['model_id']}/merge")
    assert again.status_code == 409, again.text
    assert "full weights" in again.json()["detail"]
    assert client.post("/api/models/model_does_not_exist/merge").status_code == 404

    deleted = client.delete(f"/api/models/{merged['model_id']}")
    assert deleted.status_code == 200, deleted.text
    assert not folder.exists()


def test_push_without_a_network_is_a_clear_503_that_never_shows_the_token(
    client: httpx.Client, adapter_model: registry_pb2.Model, hub_stack: Stack
) -> None:
    response = client.post("/api/hub/push", json={
        "model_id": adapter_model.model_id, "repo_name": "someone/tiny-adapter", "private": True,
    })
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status_code"] == 503
    assert "Hub" in body["detail"]
    assert HF_TOKEN not in response.text
    for log in hub_stack.run_dir.glob("*.log"):
        assert HF_TOKEN not in log.read_text(errors="replace"), f"token leaked into {log.name}"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model_id": "model_does_not_exist", "repo_name": "someone/x"}, 404, None),
        ({"repo_name": "someone/x"}, 400, "model_id"),
        ({"model_id": "MODEL", "repo_name": "not a valid/repo name!"}, 400, "repo_name"),
        ({"model_id": "MODEL", "repo_name": "someone/x", "token": "hf_fromclient"}, 400, "token"),
    ],
)
def test_bad_push_requests_are_4xx_naming_the_field(
    client: httpx.Client, adapter_model: registry_pb2.Model, body: dict[str, str], status: int, field: str | None
) -> None:
    if body.get("model_id") == "MODEL":
        body = body | {"model_id": adapter_model.model_id}
    response = client.post("/api/hub/push", json=body)
    assert response.status_code == status, response.text
    if field is not None:
        assert field in response.text


def merged_folders(stack: Stack) -> set[str]:
    return {p.name for p in (Path(stack.env["MODELFORGE_DATA_DIR"]) / "models").glob("*-merged-*")}


def test_merging_twice_under_one_name_is_409_before_a_second_merge_and_leaves_no_copy(
    client: httpx.Client, adapter_model: registry_pb2.Model, hub_stack: Stack
) -> None:
    before = merged_folders(hub_stack)
    first = client.post(f"/api/models/{adapter_model.model_id}/merge", json={"name": "merge-twice"})
    assert first.status_code == 201, first.text
    after_first = merged_folders(hub_stack)
    assert len(after_first - before) == 1

    second = client.post(f"/api/models/{adapter_model.model_id}/merge", json={"name": "merge-twice"})
    assert second.status_code == 409, second.text
    assert second.json()["detail"] == "Model name 'merge-twice' is already taken"
    # Refused before merging: no second folder, and the registered one is untouched.
    assert merged_folders(hub_stack) == after_first
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    assert names.count("merge-twice") == 1

    assert client.delete(f"/api/models/{first.json()['model_id']}").status_code == 200
    assert merged_folders(hub_stack) == before


def test_a_failed_merge_leaves_no_folder_behind(
    client: httpx.Client, hub_stack: Stack, tiny_causal_model: Path
) -> None:
    """An adapter whose files changed since registration: inference refuses to merge it, and no
    merged folder is left (the gateway has the registry discard what the merge may have written)."""
    folder = Path(hub_stack.env["MODELFORGE_DATA_DIR"]) / "models" / "tampered-adapter"
    build_adapter(tiny_causal_model, folder)
    with grpc.insecure_channel(hub_stack.addr("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        record = registry_pb2.Model(
            name="tampered", base_model=str(tiny_causal_model), task="text-generation", strategy="sft",
            provider="huggingface", path=str(folder), adapter_type="lora", job_id="job-tampered",
        )
        model = stub.RegisterModel(registry_pb2.RegisterModelRequest(model=record), timeout=30).model
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    before = merged_folders(hub_stack)

    response = client.post(f"/api/models/{model.model_id}/merge", json={"name": "never-registered"})
    assert response.status_code == 409, response.text
    assert merged_folders(hub_stack) == before
    assert "never-registered" not in [m["name"] for m in client.get("/api/models").json()["models"]]


def test_the_registry_discards_only_unregistered_model_folders(
    hub_stack: Stack, adapter_model: registry_pb2.Model
) -> None:
    stray = Path(hub_stack.env["MODELFORGE_DATA_DIR"]) / "models" / "stray-merged-0000"
    (stray / "sub").mkdir(parents=True)
    (stray / "sub" / "model.safetensors").write_bytes(b"weights")
    with grpc.insecure_channel(hub_stack.addr("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        discard = registry_pb2.DiscardModelFolderRequest
        assert stub.DiscardModelFolder(discard(path="models/stray-merged-0000"), timeout=30).removed
        assert not stray.exists()
        assert not stub.DiscardModelFolder(discard(path="models/stray-merged-0000"), timeout=30).removed
        with pytest.raises(grpc.RpcError) as refused:
            stub.DiscardModelFolder(discard(path=adapter_model.path), timeout=30)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as outside:
            stub.DiscardModelFolder(discard(path="/etc"), timeout=30)
        assert outside.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert Path(adapter_model.path).is_dir()
