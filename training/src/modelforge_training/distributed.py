"""What a worker process needs to know when it is one rank of a distributed job (torchrun's
environment), and the settings the libraries' own DDP/FSDP support is driven with.

torchrun (the launcher, launch.py) sets RANK, LOCAL_RANK and WORLD_SIZE in each rank's
environment; a worker without them is a single-process job. Only rank 0 talks to the service: it
opens the launcher's events pipe through /proc (torchrun's children do not inherit file descriptors),
writes the result file, the adapter and the tokenizer. Every rank takes part in training, evaluation
and checkpointing (FSDP gathers the shards there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from modelforge_training.spec import DDP, FSDP


@dataclass(frozen=True)
class RankInfo:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def rank_info(environ: dict[str, str] | None = None) -> RankInfo:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""
    env = os.environ if environ is None else environ
    try:
        return RankInfo(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        return RankInfo(0, 0, 1)


def under_torchrun(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


def distributed_training_arguments(mode: str, *, cuda: bool) -> dict[str, Any]:
    """TrainingArguments for transformers' (accelerate's) own DDP or FSDP2; {} for one process.

    DDP: gloo on the CPU, nccl on GPUs; LoRA leaves most parameters frozen, but every trainable one
    takes part in each step, so DDP need not search for unused ones. FSDP2 (fully_shard) wraps each
    decoder layer (the model's _no_split_modules) and reshards after forward (full shard); the saved
    checkpoints and the final adapter hold full, gathered tensors, so a resume or a registered model
    does not depend on the number of processes.
    """
    if not mode:
        return {}
    arguments: dict[str, Any] = {"ddp_backend": "nccl" if cuda else "gloo"}
    if mode == DDP:
        arguments["ddp_find_unused_parameters"] = False
    elif mode == FSDP:
        arguments["fsdp"] = True
        arguments["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
        }
    else:
        raise ValueError(f"unknown distributed mode {mode!r}")
    return arguments


def stop_everywhere(local: bool, device: Any) -> bool:
    """True when any rank was asked to stop: every rank must stop at the same step (a rank that
    stops alone leaves the others waiting in a collective). One all-reduce per step; a plain read of
    the flag when the process group is not set up (one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def enable_fsdp_on_cpu(trainer: Any) -> None:
    """accelerate turns an FSDP plugin into FSDP only on GPU-like devices (MULTI_GPU, MULTI_XPU ...);
    on the CPU it would train plain DDP (gloo) instead. torch's FSDP2 (fully_shard) runs on the CPU
    with gloo, so the CPU path gets the same sharding the GPU path does: the state accelerate would
    have set there, before training prepares the model. Called only where accelerate left it off."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin_args = trainer.args.fsdp_plugin_args
    if plugin_args is None or trainer.is_fsdp_enabled:
        return
    state = trainer.accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    state.distributed_type = DistributedType.FSDP
    # Each AcceleratorState() (accelerate makes them everywhere) copies the process state over its
    # own: the process state must say FSDP as well, or the next one turns this back into DDP
    # (accelerate's own GPU path sets it there too).
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
