"""Settings that fit: the nearest settings an oversize job could train with, and the largest batch."""

from __future__ import annotations

import dataclasses

from modelforge_hardware.estimator import TrainingJob, estimate
from modelforge_hardware.fit import Target, choose_target, fits
from modelforge_hardware.model_shape import shape_from_config
from modelforge_hardware.proposals import max_batch_size, propose
from modelforge_hardware.recorded import RECORDED

from .conftest import LLAMA_8B, LLAMA_70B

LLAMA_8B_SHAPE = shape_from_config(LLAMA_8B)
LLAMA_1B_SHAPE = shape_from_config(
    {**LLAMA_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
     "head_dim": 64, "tie_word_embeddings": True}
)
LLAMA_3B_SHAPE = shape_from_config(
    {**LLAMA_8B, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
     "tie_word_embeddings": True}
)


def rtx3070() -> Target:
    machine = RECORDED["rtx3070"]
    return choose_target(machine.gpus.gpus, machine.system, 0)


def job(**changes: object) -> TrainingJob:
    base = TrainingJob(
        strategy="sft", lora_r=16, batch_size=8, seq_len=1024, precision="bf16", use_4bit=False,
        gradient_checkpointing=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_largest_batch_fits_and_one_more_does_not() -> None:
    target = rtx3070()
    qlora = job(use_4bit=True, gradient_checkpointing=True)
    largest = max_batch_size(LLAMA_3B_SHAPE, qlora, target)

    assert largest >= 1
    assert fits(estimate(LLAMA_3B_SHAPE, dataclasses.replace(qlora, batch_size=largest)), target)
    assert not fits(estimate(LLAMA_3B_SHAPE, dataclasses.replace(qlora, batch_size=largest + 1)), target)


def test_largest_batch_is_zero_when_nothing_fits() -> None:
    assert max_batch_size(shape_from_config(LLAMA_70B), job(), rtx3070()) == 0


def test_a_job_that_fits_gets_no_proposals() -> None:
    small = job(use_4bit=True, gradient_checkpointing=True, batch_size=1, seq_len=256)
    assert fits(estimate(LLAMA_3B_SHAPE, small), rtx3070())
    assert propose(LLAMA_3B_SHAPE, small, rtx3070(), accumulation=1, unsloth_available=True) == []


def test_every_proposal_fits_and_the_batch_proposal_keeps_the_effective_batch() -> None:
    target = rtx3070()
    oversize = job(use_4bit=True, gradient_checkpointing=True, batch_size=16)
    assert not fits(estimate(LLAMA_3B_SHAPE, oversize), target)

    proposals = propose(LLAMA_3B_SHAPE, oversize, target, accumulation=2, unsloth_available=True)

    assert proposals
    for proposal in proposals:
        settings = proposal.settings
        applied = dataclasses.replace(
            oversize, batch_size=settings.per_device_train_batch_size, seq_len=settings.max_seq_length,
            use_4bit=settings.use_4bit, gradient_checkpointing=settings.gradient_checkpointing,
            provider=settings.provider,
        )
        assert fits(estimate(LLAMA_3B_SHAPE, applied), target), proposal
        assert proposal.total_bytes == estimate(LLAMA_3B_SHAPE, applied).breakdown.total_bytes
    first = proposals[0]
    assert first.changed == ("per_device_train_batch_size", "gradient_accumulation_steps")
    batch = first.settings.per_device_train_batch_size
    assert batch < 16
    assert batch * first.settings.gradient_accumulation_steps == 16 * 2  # a divisor keeps it exactly
    assert "effective batch" in first.description


def test_levers_are_offered_nearest_first() -> None:
    target = rtx3070()
    oversize = job(batch_size=8, seq_len=2048)  # 1B in bf16 without checkpointing: 40 GiB of activations
    assert not fits(estimate(LLAMA_1B_SHAPE, oversize), target)

    proposals = propose(LLAMA_1B_SHAPE, oversize, target, accumulation=1, unsloth_available=True)
    kinds = []
    for proposal in proposals:
        changed = set(proposal.changed)
        for lever in ("gradient_checkpointing", "use_4bit", "provider", "max_seq_length"):
            if lever in changed:
                kinds.append(lever)
                break
        else:
            kinds.append("per_device_train_batch_size")

    # A smaller batch (same training), checkpointing, unsloth, then a shorter length (truncates rows).
    assert kinds == ["per_device_train_batch_size", "gradient_checkpointing", "provider", "max_seq_length"]
    assert next(p for p in proposals if "provider" in p.changed).settings.provider == "unsloth"
    # 4-bit alone is no help here: the huggingface path's fp32 residual stream grows the activations.
    assert not any("use_4bit" in p.changed for p in proposals)


def test_unsloth_is_offered_only_where_available() -> None:
    oversize = job(batch_size=4, seq_len=2048)
    proposals = propose(LLAMA_3B_SHAPE, oversize, rtx3070(), accumulation=1, unsloth_available=False)
    assert all(p.settings.provider == "huggingface" for p in proposals)


def test_when_no_single_lever_fits_all_of_them_are_combined() -> None:
    machine = RECORDED["rtx3070"]
    # 7.5 GiB free: 8B in bf16 needs 15 GiB of weights; only 4-bit + unsloth + batch 1 + a shorter length fit.
    gpu = dataclasses.replace(machine.gpus.gpus[0], free_memory_bytes=15 << 29)
    target = choose_target((gpu,), machine.system, 0)
    oversize = job(batch_size=4, seq_len=8192)

    proposals = propose(LLAMA_8B_SHAPE, oversize, target, accumulation=1, unsloth_available=True)

    assert len(proposals) == 1
    combined = proposals[0]
    assert combined.settings.use_4bit and combined.settings.gradient_checkpointing
    assert combined.settings.provider == "unsloth"
    assert combined.settings.per_device_train_batch_size * combined.settings.gradient_accumulation_steps == 4
    assert combined.settings.max_seq_length < 8192
    applied = dataclasses.replace(
        oversize, batch_size=1, seq_len=combined.settings.max_seq_length, use_4bit=True,
        gradient_checkpointing=True, provider="unsloth",
    )
    assert fits(estimate(LLAMA_8B_SHAPE, applied), target)
