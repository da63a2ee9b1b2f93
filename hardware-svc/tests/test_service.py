"""HardwareService's domain rules: defaults for unset fields, task inference, Hub deadlines."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from modelforge_common.errors import InvalidArgument, Unavailable
from modelforge_hardware.service import MemoryRequest

from .conftest import LLAMA_8B, TINY_LLAMA, write_model_folder

BERT_QA = {
    "architectures": ["BertForQuestionAnswering"], "model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 512, "max_position_embeddings": 512, "type_vocab_size": 2,
    "vocab_size": 1000,
}


async def test_unset_fields_take_the_profile_defaults(make_service, tiny_model_dir: Path) -> None:
    answer = await make_service("rtx3070").estimate_memory(MemoryRequest(model_name=str(tiny_model_dir)))

    job = answer.job
    assert (job.strategy, job.lora_r, job.batch_size, job.seq_len, job.precision) == ("sft", 64, 2, 2048, "bf16")
    assert not job.use_4bit and job.on_gpu
    assert answer.task == "text-generation"


async def test_cpu_node_estimates_fp32_on_system_ram(make_service, tiny_model_dir: Path) -> None:
    answer = await make_service("none").estimate_memory(MemoryRequest(model_name=str(tiny_model_dir)))
    assert (answer.job.precision, answer.job.on_gpu, answer.device) == ("fp32", False, "cpu")
    assert (answer.job.batch_size, answer.job.seq_len) == (1, 512)


async def test_qlora_implies_4bit(make_service, tiny_model_dir: Path) -> None:
    answer = await make_service().estimate_memory(MemoryRequest(model_name=str(tiny_model_dir), strategy="qlora"))
    assert answer.job.four_bit


async def test_encoder_folder_is_sized_as_extractive_qa(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "bert-qa", BERT_QA)
    service = make_service()

    answer = await service.estimate_memory(MemoryRequest(model_name=str(folder)))
    assert answer.task == "extractive-question-answering"
    assert answer.job.seq_len == 384  # the task's override

    with pytest.raises(InvalidArgument) as raised:
        await service.estimate_memory(MemoryRequest(model_name=str(folder), strategy="dpo"))
    assert [v.field for v in raised.value.violations] == ["strategy"]


async def test_full_fine_tuning_cannot_be_4bit(make_service, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await make_service().estimate_memory(
            MemoryRequest(model_name=str(tiny_model_dir), strategy="qlora", lora_r=-1)
        )
    assert [v.field for v in raised.value.violations] == ["lora_r"]


async def test_unsizable_config_is_invalid(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "odd", {"model_type": "mystery", "hidden_size": 64})
    with pytest.raises(InvalidArgument) as raised:
        await make_service().estimate_memory(MemoryRequest(model_name=str(folder)))
    assert [v.field for v in raised.value.violations] == ["model_name"]


async def test_hub_calls_are_bounded_by_a_deadline(make_service, tiny_model_dir: Path) -> None:
    service = make_service(timeout_s=0.05)

    def stalled(name: str) -> dict[str, object]:
        time.sleep(1.0)
        return TINY_LLAMA

    service._models.load_config = stalled  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="no answer within"):
        await service.estimate_memory(MemoryRequest(model_name="acme/slow"))


async def test_hardware_carries_the_torch_version(make_service) -> None:
    hardware = await make_service(torch="2.13.0+cpu").hardware()
    assert hardware.torch_version == "2.13.0+cpu"
    assert hardware.bf16_supported


async def test_8b_defaults_on_the_h100(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    answer = await make_service("h100x2").estimate_memory(
        MemoryRequest(model_name=str(folder), strategy="qlora", gradient_checkpointing=True)
    )
    assert answer.fits
    assert (answer.job.batch_size, answer.job.lora_r) == (4, 64)  # high_end defaults


async def test_provider_and_dropout_reach_the_estimate(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    service = make_service("h100x2")
    request = MemoryRequest(model_name=str(folder), strategy="qlora", lora_r=16, gradient_checkpointing=True)

    default = await service.estimate_memory(request)
    unsloth = await service.estimate_memory(dataclasses.replace(request, provider="unsloth"))
    dropout = await service.estimate_memory(dataclasses.replace(request, lora_dropout=0.05))

    assert (default.job.provider, default.job.lora_dropout) == ("huggingface", 0.0)
    assert unsloth.job.provider == "unsloth"
    assert unsloth.estimate.breakdown.total_bytes < default.estimate.breakdown.total_bytes
    assert dropout.job.lora_dropout == 0.05
    assert dropout.estimate.breakdown.total_bytes > default.estimate.breakdown.total_bytes
    assert default.max_batch_size > default.job.batch_size  # 80 GiB holds far more than the default 4


async def test_bad_provider_dropout_and_accumulation_name_their_fields(make_service, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await make_service().estimate_memory(
            MemoryRequest(
                model_name=str(tiny_model_dir), provider="deepspeed", lora_dropout=1.5, gradient_accumulation_steps=-2
            )
        )
    assert {v.field for v in raised.value.violations} == {"provider", "lora_dropout", "gradient_accumulation_steps"}


async def test_unsloth_is_refused_without_a_gpu(make_service, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await make_service("none").estimate_memory(MemoryRequest(model_name=str(tiny_model_dir), provider="unsloth"))
    assert [v.field for v in raised.value.violations] == ["provider"]


async def test_oversize_job_gets_proposals_keeping_the_effective_batch(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    answer = await make_service("h100x2").estimate_memory(
        MemoryRequest(
            model_name=str(folder), strategy="sft", lora_r=16, batch_size=64, max_seq_length=4096,
            gradient_accumulation_steps=2, gpu_index=0, gradient_checkpointing=True,
        )
    )
    assert not answer.fits
    first = answer.proposals[0]
    assert first.changed == ("per_device_train_batch_size", "gradient_accumulation_steps")
    assert answer.max_batch_size // 2 <= first.settings.per_device_train_batch_size <= answer.max_batch_size
    assert first.settings.per_device_train_batch_size * first.settings.gradient_accumulation_steps >= 128
    assert "Settings that fit: (1) per_device_train_batch_size=" in answer.message


async def test_proposals_offer_only_the_providers_the_caller_can_run(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    request = MemoryRequest(
        model_name=str(folder), strategy="qlora", lora_r=16, batch_size=2, max_seq_length=2048,
        gradient_checkpointing=True, gpu_index=0,
    )
    service = make_service("rtx3070")

    anywhere = await service.estimate_memory(request)
    huggingface_only = await service.estimate_memory(dataclasses.replace(request, providers=("huggingface",)))

    assert any(p.settings.provider == "unsloth" for p in anywhere.proposals)
    assert all(p.settings.provider == "huggingface" for p in huggingface_only.proposals)
