"""The per-process estimate of a distributed job (issue 19): FSDP shards weights, adapters, gradients
and optimizer state and gathers two layers at a time; DDP keeps everything and adds its gradient
buckets; one process is the single-process estimate. The proposals and the largest batch of a
distributed job are judged by that same per-process estimate, and a DDP job that does not fit is
offered FSDP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_hardware.convert import proposal_to_pb
from modelforge_hardware.distributed import Distribution, per_process
from modelforge_hardware.estimator import TrainingJob, estimate
from modelforge_hardware.fit import Target, choose_target, fits
from modelforge_hardware.model_shape import shape_from_config
from modelforge_hardware.proposals import Proposal, max_batch_size, propose
from modelforge_hardware.recorded import RECORDED
from modelforge_hardware.service import MemoryRequest

from .conftest import LLAMA_8B, write_model_folder

SHAPE = shape_from_config(LLAMA_8B)
LLAMA_1B_SHAPE = shape_from_config(
    {**LLAMA_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
     "head_dim": 64, "tie_word_embeddings": True}
)
DDP_2 = Distribution(2, "ddp")
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


def h100() -> Target:
    machine = RECORDED["h100x2"]
    return choose_target(machine.gpus.gpus, machine.system, 0)


def applied(job: TrainingJob, proposal: Proposal) -> tuple[TrainingJob, Distribution]:
    settings = proposal.settings
    return dataclasses.replace(
        job, batch_size=settings.per_device_train_batch_size, seq_len=settings.max_seq_length,
        use_4bit=settings.use_4bit, gradient_checkpointing=settings.gradient_checkpointing,
        provider=settings.provider,
    ), Distribution(2, settings.distributed)


def test_a_ddp_job_is_proposed_only_what_fits_one_of_its_processes() -> None:
    target = h100()
    # 1B full fine-tune: its gradients (and so DDP's buckets) are GiBs, and a batch of 84 fits neither way.
    oversize = dataclasses.replace(FULL, batch_size=84)
    single_largest = max_batch_size(LLAMA_1B_SHAPE, oversize, target)
    ddp_largest = max_batch_size(LLAMA_1B_SHAPE, oversize, target, distribution=DDP_2)
    # The premise: the single-process estimate fits a batch one DDP process cannot hold.
    assert 0 < ddp_largest < single_largest
    at_single_largest = dataclasses.replace(oversize, batch_size=single_largest)
    assert not fits(DDP_2.estimate(LLAMA_1B_SHAPE, at_single_largest), target)
    single_batches = {p.settings.per_device_train_batch_size
                      for p in propose(LLAMA_1B_SHAPE, oversize, target, accumulation=1, unsloth_available=True)}
    assert single_largest in single_batches  # what the single-process estimate would propose

    proposals = propose(LLAMA_1B_SHAPE, oversize, target, accumulation=1, unsloth_available=True,
                        distribution=DDP_2)

    assert proposals
    ddp_batches = {p.settings.per_device_train_batch_size for p in proposals
                   if p.settings.distributed == "ddp" and p.settings.max_seq_length == oversize.seq_len}
    assert single_largest not in ddp_batches and max(ddp_batches) <= ddp_largest
    for proposal in proposals:  # every one fits by the per-process estimate, and reports it
        job, distribution = applied(oversize, proposal)
        assert fits(distribution.estimate(LLAMA_1B_SHAPE, job), target), proposal
        assert proposal.total_bytes == distribution.estimate(LLAMA_1B_SHAPE, job).breakdown.total_bytes
        assert proposal.settings.provider == "huggingface"  # unsloth trains in one process only
    # The batch lever first, then FSDP (the same training, sharded), then the rest.
    assert proposals[0].changed == ("per_device_train_batch_size", "gradient_accumulation_steps")
    assert proposals[1].settings.distributed == "fsdp" and "distributed" in proposals[1].changed
    assert "distributed fsdp" in proposals[1].description
    assert proposal_to_pb(proposals[1]).settings.distributed == "fsdp"


def test_largest_batch_of_a_distributed_job_is_one_process_s() -> None:
    target = h100()
    for distribution in (DDP_2, Distribution(2, "fsdp")):
        largest = max_batch_size(LLAMA_1B_SHAPE, FULL, target, distribution=distribution)
        assert largest >= 1
        assert fits(distribution.estimate(LLAMA_1B_SHAPE, dataclasses.replace(FULL, batch_size=largest)), target)
        assert not fits(distribution.estimate(LLAMA_1B_SHAPE, dataclasses.replace(FULL, batch_size=largest + 1)),
                        target)
    assert (max_batch_size(LLAMA_1B_SHAPE, FULL, target, distribution=DDP_2)
            < max_batch_size(LLAMA_1B_SHAPE, FULL, target)
            < max_batch_size(LLAMA_1B_SHAPE, FULL, target, distribution=Distribution(2, "fsdp")))


def test_fsdp_is_offered_only_where_it_can_run() -> None:
    target = h100()
    qlora = dataclasses.replace(FULL, strategy="qlora", lora_r=16, use_4bit=True, batch_size=512, seq_len=4096)
    assert not fits(DDP_2.estimate(SHAPE, qlora), target)
    proposals = propose(SHAPE, qlora, target, accumulation=1, unsloth_available=True, distribution=DDP_2)
    assert proposals
    # FSDP cannot shard 4-bit weights; unsloth trains in one process.
    assert all(p.settings.distributed == "ddp" and p.settings.provider == "huggingface" for p in proposals)


async def test_the_service_offers_fsdp_to_a_ddp_job_that_does_not_fit(make_service, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "llama-8b", LLAMA_8B)
    answer = await make_service("h100x2").estimate_memory(MemoryRequest(
        model_name=str(folder), lora_r=-1, batch_size=1, max_seq_length=2048, gradient_checkpointing=True,
        world_size=8, distributed="ddp", gpu_index=0,
    ))
    assert not answer.fits and answer.max_batch_size == 0  # 8B fully fine-tuned: no DDP process holds it
    sharded = [p for p in answer.proposals if p.changed == ("distributed",)]
    assert len(sharded) == 1 and sharded[0].settings.distributed == "fsdp"
    fsdp = Distribution(8, "fsdp")
    assert sharded[0].total_bytes == fsdp.estimate(SHAPE, answer.job).breakdown.total_bytes
    assert "distributed=fsdp" in answer.message
    fitted = await make_service("h100x2").estimate_memory(MemoryRequest(
        model_name=str(folder), lora_r=-1, batch_size=1, max_seq_length=2048, gradient_checkpointing=True,
        world_size=8, distributed="fsdp", gpu_index=0,
    ))
    assert fitted.fits and not fitted.proposals
    assert fitted.max_batch_size == max_batch_size(SHAPE, fitted.job, h100(), limit=4096, distribution=fsdp)
    assert fitted.max_batch_size > max_batch_size(SHAPE, fitted.job, h100(), limit=4096)
