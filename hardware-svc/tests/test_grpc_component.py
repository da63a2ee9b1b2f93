"""HardwareService through a real grpc.aio server on port 0 with recorded machines, as a client
(the gateway, the trainer) sees it: messages, status codes, details and field violations."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelforge.v1 import hardware_pb2
from modelforge_common.grpc_client import violations_of

from .conftest import LLAMA_8B, LLAMA_70B, SPEC_MESSAGE, TINY_LLAMA, FakeHub, write_model_folder

GIB = 1 << 30
DEADLINE_S = 20.0


async def test_get_hardware_reports_the_spec_machine(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service("rtx3070")) as running:
        reply = await running.stub.GetHardware(hardware_pb2.GetHardwareRequest(), timeout=DEADLINE_S)

    hardware = reply.hardware
    assert [(g.index, g.name) for g in hardware.gpus] == [(0, "NVIDIA GeForce RTX 3070")]
    # The spec's detect / hardware_specs figures, in GiB.
    assert hardware.gpus[0].total_memory_bytes / GIB == 8.0
    assert hardware.ram_total_bytes / GIB == 16.0
    assert hardware.disk_free_bytes / GIB == 250.5
    assert hardware.cpu_cores == 8
    assert (hardware.profile, hardware.device_type) == ("mid_range", "cuda")
    assert (hardware.cuda_driver_version, hardware.driver_version) == ("12.6", "560.35.03")
    assert hardware.torch_version == "2.1.0"


async def test_get_hardware_without_gpus(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service("none")) as running:
        reply = await running.stub.GetHardware(hardware_pb2.GetHardwareRequest(), timeout=DEADLINE_S)
    assert list(reply.hardware.gpus) == []
    assert (reply.hardware.profile, reply.hardware.device_type) == ("low_end", "cpu")


async def test_health_and_reflection_are_served(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service()) as running:
        reply = await health_pb2_grpc.HealthStub(running.channel).Check(
            health_pb2.HealthCheckRequest(service="modelforge.v1.HardwareService"), timeout=DEADLINE_S
        )
        services = await _reflected_services(running.channel)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert "modelforge.v1.HardwareService" in services


async def _reflected_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in call:
        return [service.name for service in response.list_services_response.service]
    return []


async def test_recommendations_for_the_spec_machine(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service("rtx3070")) as running:
        reply = await running.stub.GetRecommendations(
            hardware_pb2.GetRecommendationsRequest(task="text-generation"), timeout=DEADLINE_S
        )

    assert (reply.task, reply.profile) == ("text-generation", "mid_range")
    assert reply.recommended_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert list(reply.possible_models) == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "qwen/Qwen2.5-7B",
        "mistralai/Mistral-Small-3.1-24B-Base-2503",
    ]
    d = reply.defaults
    assert (d.per_device_train_batch_size, d.gradient_accumulation_steps, d.max_seq_length) == (2, 4, 2048)
    assert (d.learning_rate, d.num_train_epochs, d.warmup_ratio) == (2e-4, 3.0, 0.03)
    assert (d.lora_r, d.lora_alpha, d.use_4bit, d.bf16) == (64, 128, True, True)
    assert (d.lr_scheduler_type, d.optim) == ("cosine", "paged_adamw_32bit")
    assert reply.hardware.profile == "mid_range"


async def test_recommendations_default_task_and_cpu_defaults(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service("none")) as running:
        reply = await running.stub.GetRecommendations(hardware_pb2.GetRecommendationsRequest(), timeout=DEADLINE_S)
    assert (reply.task, reply.profile) == ("text-generation", "low_end")
    assert (reply.defaults.bf16, reply.defaults.use_4bit, reply.defaults.optim) == (False, False, "adamw_torch")


async def test_unknown_task_is_invalid_argument(make_service, serve_hardware) -> None:
    async with serve_hardware(make_service()) as running:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.GetRecommendations(
                hardware_pb2.GetRecommendationsRequest(task="translation"), timeout=DEADLINE_S
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(raised.value)] == ["task"]


def _estimate_request(model: Path | str, **fields: object) -> hardware_pb2.EstimateMemoryRequest:
    values: dict[str, object] = {
        "model_name": str(model), "strategy": "qlora", "task": "text-generation", "lora_r": 16, "batch_size": 1,
        "max_seq_length": 512, "precision": "bf16", "use_4bit": True, "gradient_checkpointing": True,
        "gpu_index": -1,
    }
    values.update(fields)
    return hardware_pb2.EstimateMemoryRequest(**values)  # type: ignore[arg-type]


async def test_estimate_memory_of_a_local_model(make_service, serve_hardware, tiny_model_dir: Path) -> None:
    async with serve_hardware(make_service("h100x2")) as running:
        reply = await running.stub.EstimateMemory(_estimate_request(tiny_model_dir), timeout=DEADLINE_S)

    b = reply.breakdown
    assert b.total_bytes == sum(
        (b.weights_bytes, b.adapters_bytes, b.optimizer_bytes, b.gradients_bytes, b.activations_bytes,
         b.logits_bytes, b.overhead_bytes)
    )
    assert sum(part.bytes for part in b.parts) == b.total_bytes
    assert reply.provider == "huggingface" and reply.settings.max_seq_length == 512
    assert reply.max_batch_size > 1 and not reply.proposals
    assert b.adapters_bytes > 0 and b.weights_bytes > 0
    assert reply.fits
    assert reply.device == "cuda:1"  # the H100 with most free memory
    assert reply.available_bytes == 81004 * (1 << 20)
    assert "fits" in reply.message


async def test_8b_estimate_does_not_fit_the_3070(make_service, serve_hardware, tmp_path: Path) -> None:
    model = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    async with serve_hardware(make_service("rtx3070")) as running:
        # Zero fields take the mid_range defaults (batch 2, sequence 2048, bf16).
        reply = await running.stub.EstimateMemory(
            hardware_pb2.EstimateMemoryRequest(
                model_name=str(model), strategy="qlora", gradient_checkpointing=True, lora_r=16, lora_dropout=0
            ),
            timeout=DEADLINE_S,
        )
    assert not reply.fits
    assert reply.device == "cuda:0"
    assert reply.breakdown.total_bytes > reply.available_bytes
    assert "does not fit" in reply.message and "Largest parts: " in reply.message
    assert reply.proposals and "Settings that fit: (1) " in reply.message
    first = reply.proposals[0]
    assert first.total_bytes - reply.breakdown.preexisting_bytes <= reply.available_bytes
    assert list(first.changed) and first.settings.per_device_train_batch_size >= 1
    # The huggingface provider's fp32 embeddings and head alone leave no room on 8 GiB: unsloth does.
    assert first.settings.provider == "unsloth" and "provider=unsloth" in reply.message
    assert reply.max_batch_size == 0


async def test_70b_qlora_is_refused_on_a_24_gib_cpu_machine(make_service, serve_hardware, tmp_path: Path) -> None:
    model = write_model_folder(tmp_path / "llama-70b", LLAMA_70B)
    async with serve_hardware(make_service("none")) as running:
        big = await running.stub.EstimateMemory(_estimate_request(model), timeout=DEADLINE_S)
        small = await running.stub.EstimateMemory(
            _estimate_request(write_model_folder(tmp_path / "tiny", TINY_LLAMA)), timeout=DEADLINE_S
        )
    assert (big.device, big.fits, big.available_bytes) == ("cpu", False, 20 * GIB)
    assert (small.device, small.fits) == ("cpu", True)


async def test_bad_estimate_requests_name_their_fields(make_service, serve_hardware, tiny_model_dir: Path) -> None:
    async with serve_hardware(make_service("rtx3070")) as running:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.EstimateMemory(
                _estimate_request(tiny_model_dir, strategy="ppo", precision="int3", batch_size=-1, lora_r=-5),
                timeout=DEADLINE_S,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in violations_of(raised.value)} == {"strategy", "precision", "batch_size", "lora_r"}

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.EstimateMemory(_estimate_request(tiny_model_dir, gpu_index=5), timeout=DEADLINE_S)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in violations_of(raised.value)] == ["gpu_index"]

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.EstimateMemory(
                _estimate_request(tiny_model_dir, task="extractive-question-answering", strategy="dpo"),
                timeout=DEADLINE_S,
            )
        assert [v.field for v in violations_of(raised.value)] == ["strategy"]

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.EstimateMemory(_estimate_request(tiny_model_dir.parent), timeout=DEADLINE_S)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in violations_of(raised.value)] == ["model_name"]


async def test_describe_local_model(make_service, serve_hardware, tiny_model_dir: Path) -> None:
    async with serve_hardware(make_service()) as running:
        reply = await running.stub.DescribeModel(
            hardware_pb2.DescribeModelRequest(model_name=str(tiny_model_dir)), timeout=DEADLINE_S
        )
    assert (reply.local, reply.architecture, reply.id) == (True, "LlamaForCausalLM", str(tiny_model_dir))


async def test_describe_hub_model(make_service, serve_hardware, fake_hub: FakeHub) -> None:
    fake_hub.repos["username/custom-model"] = TINY_LLAMA
    async with serve_hardware(make_service(endpoint=fake_hub.url)) as running:
        reply = await running.stub.DescribeModel(
            hardware_pb2.DescribeModelRequest(model_name="username/custom-model"), timeout=DEADLINE_S
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.DescribeModel(
                hardware_pb2.DescribeModelRequest(model_name="username/missing-model"), timeout=DEADLINE_S
            )
    assert (reply.id, reply.author, reply.downloads, reply.likes, reply.local) == (
        "username/custom-model", "username", 1234, 56, False
    )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details() == SPEC_MESSAGE.format("username/missing-model")


async def test_estimate_memory_of_a_hub_model_reads_only_its_config(
    make_service, serve_hardware, fake_hub: FakeHub
) -> None:
    fake_hub.repos["acme/tiny-llama"] = TINY_LLAMA
    async with serve_hardware(make_service("rtx4090", endpoint=fake_hub.url)) as running:
        reply = await running.stub.EstimateMemory(_estimate_request("acme/tiny-llama"), timeout=DEADLINE_S)
    assert reply.fits
    fetched = [r for r in fake_hub.requests if "/resolve/" in r]
    assert fetched and all(r.endswith("/config.json") for r in fetched)


async def test_hub_offline_is_unavailable_at_once(
    make_service, serve_hardware, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    async with serve_hardware(make_service(endpoint=fake_hub.url)) as running:
        for call, request in (
            (running.stub.DescribeModel, hardware_pb2.DescribeModelRequest(model_name="acme/some-model")),
            (running.stub.EstimateMemory, _estimate_request("acme/some-model")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(request, timeout=DEADLINE_S)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details().startswith("Hugging Face Hub cannot be reached")
    assert fake_hub.requests == []


async def test_unreachable_hub_is_unavailable(make_service, serve_hardware, closed_port_url: str) -> None:
    async with serve_hardware(make_service(endpoint=closed_port_url)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.DescribeModel(
                hardware_pb2.DescribeModelRequest(model_name="acme/some-model"), timeout=DEADLINE_S
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stalled_hub_does_not_hang(make_service, serve_hardware, silent_server_url: str) -> None:
    # If the service waited on the Hub, the call would end in DEADLINE_EXCEEDED instead.
    async with serve_hardware(make_service(endpoint=silent_server_url, timeout_s=0.3)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.EstimateMemory(_estimate_request("acme/some-model"), timeout=DEADLINE_S)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot be reached" in raised.value.details()
