"""Memory estimates on known shapes, and where they fit."""

from __future__ import annotations

import dataclasses

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_hardware.estimator import (
    CPU_RUNTIME_BYTES,
    CUDA_CONTEXT_BYTES,
    FRAGMENTATION,
    TrainingJob,
    activations_bytes,
    estimate,
    nf4_bytes_per_param,
)
from modelforge_hardware.fit import choose_target, judge
from modelforge_hardware.model_shape import shape_from_config
from modelforge_hardware.recorded import RECORDED

from .conftest import LLAMA_8B, LLAMA_70B, TINY_LLAMA

GB = 1e9
GIB = 1 << 30
LLAMA_8B_SHAPE = shape_from_config(LLAMA_8B)
EMBED_AND_HEAD = 2 * 128256 * 4096


def qlora(**changes: object) -> TrainingJob:
    job = TrainingJob(
        strategy="qlora", lora_r=64, batch_size=2, seq_len=2048, precision="bf16", use_4bit=True,
        gradient_checkpointing=True,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def bf16_lora(**changes: object) -> TrainingJob:
    return qlora(**{"strategy": "sft", "use_4bit": False, **changes})


def test_nf4_constants() -> None:
    # 4 bits + an 8-bit absmax per 64 weights + an fp32 constant per 256 absmax blocks.
    assert nf4_bytes_per_param(True) == pytest.approx(0.5 + 1 / 64 + 4 / 16384)
    assert nf4_bytes_per_param(False) == pytest.approx(0.5625)


def test_llama_8b_bf16_lora() -> None:
    result = estimate(LLAMA_8B_SHAPE, bf16_lora())
    b = result.breakdown

    assert result.parameters == pytest.approx(8.03e9, rel=0.001)
    assert result.trainable_parameters == 167_772_160
    assert b.weights_bytes == 2 * 8_030_261_248  # ~16 GB
    assert b.adapters_bytes == b.gradients_bytes == 4 * 167_772_160
    assert b.optimizer_bytes == 8 * 167_772_160
    # Logits dominate the activations: 4096 tokens x 128256 x (2 + 4 + 4) bytes.
    assert b.activations_bytes > 4096 * 128256 * 10
    assert 5 * GB < b.activations_bytes < 10 * GB
    assert 26 * GB < b.total_bytes < 34 * GB


def test_llama_8b_qlora_weights_count_the_fp32_upcast() -> None:
    upcast = estimate(LLAMA_8B_SHAPE, qlora()).breakdown
    kept_16bit = estimate(LLAMA_8B_SHAPE, qlora(upcast_non_quantized=False)).breakdown

    quantized = LLAMA_8B_SHAPE.quantizable_params
    assert quantized == pytest.approx(6.98e9, rel=0.001)
    # NF4 layers ~3.6 GB, plus embeddings + lm_head (1.05e9 params) in fp32 (4.2 GB) or bf16 (2.1 GB).
    assert upcast.weights_bytes == pytest.approx(quantized * nf4_bytes_per_param(True) + EMBED_AND_HEAD * 4, rel=1e-3)
    assert 7.5 * GB < upcast.weights_bytes < 8.0 * GB
    assert 5.5 * GB < kept_16bit.weights_bytes < 6.0 * GB
    assert upcast.weights_bytes - kept_16bit.weights_bytes == pytest.approx(2 * (8_030_261_248 - quantized), rel=1e-6)
    assert 18 * GB < upcast.total_bytes < 26 * GB
    assert kept_16bit.total_bytes < upcast.total_bytes


def test_rank_scales_the_adapter_parts_only() -> None:
    r16 = estimate(LLAMA_8B_SHAPE, qlora(lora_r=16))
    r64 = estimate(LLAMA_8B_SHAPE, qlora(lora_r=64))

    assert r64.trainable_parameters == 4 * r16.trainable_parameters
    assert r64.breakdown.weights_bytes == r16.breakdown.weights_bytes
    assert r64.breakdown.activations_bytes == r16.breakdown.activations_bytes
    assert r64.breakdown.optimizer_bytes == 4 * r16.breakdown.optimizer_bytes


def test_gradient_checkpointing_keeps_one_layer() -> None:
    with_checkpoints = activations_bytes(LLAMA_8B_SHAPE, bf16_lora())
    without = activations_bytes(LLAMA_8B_SHAPE, bf16_lora(gradient_checkpointing=False))

    assert without > 4 * with_checkpoints
    logits = 4096 * 128256 * 10
    # Without checkpointing every one of the 32 layers keeps its full set.
    per_layer = (without - logits) / 32
    assert 32 * per_layer > 25 * GB


def test_batch_and_sequence_scale_the_activations() -> None:
    base = activations_bytes(LLAMA_8B_SHAPE, bf16_lora(batch_size=1))
    assert activations_bytes(LLAMA_8B_SHAPE, bf16_lora(batch_size=2)) == 2 * base
    assert activations_bytes(LLAMA_8B_SHAPE, bf16_lora(batch_size=1, seq_len=4096)) == 2 * base


@pytest.mark.parametrize("strategy", ["dpo", "rlhf"])
def test_preference_training_runs_chosen_and_rejected(strategy: str) -> None:
    sft = estimate(LLAMA_8B_SHAPE, bf16_lora()).breakdown
    paired = estimate(LLAMA_8B_SHAPE, bf16_lora(strategy=strategy)).breakdown

    assert paired.activations_bytes == 2 * sft.activations_bytes
    assert paired.weights_bytes == sft.weights_bytes  # reference = adapter off


def test_full_fine_tuning_costs_16_bytes_per_parameter() -> None:
    result = estimate(LLAMA_8B_SHAPE, bf16_lora(lora_r=-1))
    b = result.breakdown

    assert result.trainable_parameters == result.parameters
    assert b.adapters_bytes == 0
    assert b.weights_bytes + b.gradients_bytes + b.optimizer_bytes == 16 * result.parameters


def test_full_fine_tuning_dpo_adds_a_reference_copy() -> None:
    sft = estimate(LLAMA_8B_SHAPE, bf16_lora(lora_r=-1)).breakdown
    dpo = estimate(LLAMA_8B_SHAPE, bf16_lora(lora_r=-1, strategy="dpo")).breakdown
    assert dpo.weights_bytes == 2 * sft.weights_bytes


def test_fp32_doubles_the_weights() -> None:
    bf16 = estimate(LLAMA_8B_SHAPE, bf16_lora()).breakdown
    fp32 = estimate(LLAMA_8B_SHAPE, bf16_lora(precision="fp32")).breakdown
    assert fp32.weights_bytes == 2 * bf16.weights_bytes


def test_overhead_is_context_plus_fragmentation() -> None:
    gpu = estimate(LLAMA_8B_SHAPE, qlora()).breakdown
    cpu = estimate(LLAMA_8B_SHAPE, qlora(on_gpu=False)).breakdown
    tensors = gpu.total_bytes - gpu.overhead_bytes

    assert gpu.overhead_bytes == CUDA_CONTEXT_BYTES + round(FRAGMENTATION * tensors)
    assert cpu.overhead_bytes == CPU_RUNTIME_BYTES + round(FRAGMENTATION * tensors)


def test_prequantized_repo_is_sized_as_4bit() -> None:
    config = {**LLAMA_8B, "quantization_config": {"load_in_4bit": True}}
    shape = shape_from_config(config)
    prequantized = estimate(shape, bf16_lora()).breakdown
    assert prequantized.weights_bytes == estimate(LLAMA_8B_SHAPE, qlora()).breakdown.weights_bytes


def test_eager_attention_adds_seq_squared_terms() -> None:
    t5 = shape_from_config({"model_type": "t5", "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
                            "num_heads": 8, "vocab_size": 32128})
    short = activations_bytes(t5, bf16_lora(seq_len=512, gradient_checkpointing=False))
    long = activations_bytes(t5, bf16_lora(seq_len=1024, gradient_checkpointing=False))
    assert long > 2 * short


# --- where it fits -----------------------------------------------------------------------------------


def test_70b_qlora_does_not_fit_a_24_gib_cpu_machine() -> None:
    machine = RECORDED["none"]
    target = choose_target(machine.gpus.gpus, machine.system, -1)
    result = estimate(shape_from_config(LLAMA_70B), qlora(batch_size=1, seq_len=512, on_gpu=False))
    fit = judge(result, target)

    assert target.device == "cpu"
    assert result.parameters == pytest.approx(70.6e9, rel=0.01)
    assert result.breakdown.weights_bytes > 35 * GB
    assert not fit.fits
    assert "does not fit" in fit.message and "cpu" in fit.message


def test_tiny_model_fits_everywhere() -> None:
    shape = shape_from_config(TINY_LLAMA)
    for name, machine in RECORDED.items():
        target = choose_target(machine.gpus.gpus, machine.system, -1)
        fit = judge(estimate(shape, qlora(on_gpu=target.on_gpu)), target)
        assert fit.fits, name
        assert "fits" in fit.message


def test_8b_qlora_fits_an_h100_not_an_rtx_3070() -> None:
    job = qlora(lora_r=16)
    result = estimate(LLAMA_8B_SHAPE, job)
    rtx = RECORDED["rtx3070"]
    h100 = RECORDED["h100x2"]

    assert not judge(result, choose_target(rtx.gpus.gpus, rtx.system, 0)).fits
    assert judge(result, choose_target(h100.gpus.gpus, h100.system, -1)).fits


def test_8b_qlora_with_small_batches_fits_a_24_gib_cpu_machine() -> None:
    machine = RECORDED["none"]
    result = estimate(LLAMA_8B_SHAPE, qlora(lora_r=16, batch_size=1, seq_len=512, on_gpu=False))
    assert judge(result, choose_target(machine.gpus.gpus, machine.system, -1)).fits


def test_most_free_gpu_is_chosen_by_default() -> None:
    h100 = RECORDED["h100x2"]
    target = choose_target(h100.gpus.gpus, h100.system, -1)
    assert target.device == "cuda:1"
    assert target.available_bytes == h100.gpus.gpus[1].free_memory_bytes


def test_named_gpu_is_compared_with_its_free_memory() -> None:
    h100 = RECORDED["h100x2"]
    target = choose_target(h100.gpus.gpus, h100.system, 0)
    assert (target.device, target.available_bytes) == ("cuda:0", h100.gpus.gpus[0].free_memory_bytes)


def test_missing_gpu_index_is_invalid() -> None:
    rtx = RECORDED["rtx3070"]
    with pytest.raises(InvalidArgument) as raised:
        choose_target(rtx.gpus.gpus, rtx.system, 3)
    assert [v.field for v in raised.value.violations] == ["gpu_index"]


def test_without_gpus_the_cpu_ram_is_the_target_whatever_the_index() -> None:
    machine = RECORDED["none"]
    target = choose_target(machine.gpus.gpus, machine.system, 0)
    assert (target.device, target.available_bytes, target.on_gpu) == ("cpu", 20 * GIB, False)
