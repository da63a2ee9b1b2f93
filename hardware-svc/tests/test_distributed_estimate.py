"""The per-process estimate of a distributed job (issue 19): FSDP shards weights, adapters, gradients
and optimizer state and gathers two layers at a time; DDP keeps everything and adds its gradient
buckets; one process is the single-process estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_hardware.distributed import per_process
from modelforge_hardware.estimator import TrainingJob, estimate
from modelforge_hardware.model_shape import shape_from_config
from modelforge_hardware.service import MemoryRequest

from .conftest import LLAMA_8B, write_model_folder

SHAPE = shape_from_config(LLAMA_8B)
FULL = TrainingJob(strategy="sft", lora_r=-1, batch_size=1, seq_len=2048, precision="bf16", use_4bit=False,
                   gradient_checkpointing=True)


def test_fsdp_shards_the_model_state() -> None:
    single = estimate(SHAPE, FULL)
    four = per_process(single, SHAPE, 4, "fsdp")
    one, many = single.breakdown, four.breakdown
    for name in ("adapters", "gradients", "optimizer"):
        assert getattr(many, f"{name}_bytes") == -(-getattr(one, f"{name}_bytes") // 4)
    gathered = 2 * one.weights_bytes / SHAPE.num_layers
    assert many.weights_bytes == pytest.approx(one.weights_bytes / 4 + gathered, rel=1e-6)
    assert (many.activations_bytes, many.logits_bytes, many.overhead_bytes) == (
        one.activations_bytes, one.logits_bytes, one.overhead_bytes)  # per process already
    # A full fine-tune of 8B (weights, fp32 master, Adam moments: ~16 bytes a parameter) fits an 80 GB
    # card only in shards.
    assert one.total_bytes > 80e9 > many.total_bytes
    assert sum(part.bytes for part in many.parts) == many.total_bytes
    assert "FSDP gathered layers" in {part.name for part in many.parts}


def test_ddp_holds_everything_plus_its_gradient_buckets() -> None:
    single = estimate(SHAPE, FULL)
    two = per_process(single, SHAPE, 2, "ddp")
    assert two.breakdown.gradients_bytes == 2 * single.breakdown.gradients_bytes
    assert two.breakdown.weights_bytes == single.breakdown.weights_bytes
    assert sum(part.bytes for part in two.breakdown.parts) == two.breakdown.total_bytes
    assert per_process(single, SHAPE, 1, "fsdp") is single
    with pytest.raises(ValueError):
        per_process(single, SHAPE, 2, "zero3")


async def test_the_service_estimates_one_process(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    service = make_service("h100x2")
    request = MemoryRequest(model_name=str(folder), lora_r=-1, batch_size=1, max_seq_length=2048,
                            gradient_checkpointing=True)
    single = await service.estimate_memory(request)
    sharded = await service.estimate_memory(MemoryRequest(**{**request.__dict__, "world_size": 8,
                                                             "distributed": "fsdp"}))
    assert not single.fits and sharded.fits
    assert sharded.estimate.breakdown.optimizer_bytes * 8 >= single.estimate.breakdown.optimizer_bytes
    with pytest.raises(InvalidArgument) as refused:
        await service.estimate_memory(MemoryRequest(model_name=str(folder), world_size=-1, distributed="zero3"))
    assert {v.field for v in refused.value.violations} == {"world_size", "distributed"}
