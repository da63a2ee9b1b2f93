"""Jobs of several processes (issue 19), the parts that need no second process: the request fields'
checks and defaults, their wire form, the DDP/FSDP training arguments, torchrun's command line, how a
failed rank is described, a rank's lifeline and silent event writer. tests/e2e/test_distributed.py
trains two-process jobs for real."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelforge.v1 import common_pb2
from modelforge_common.errors import InvalidArgument
from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.convert import resolved_to_pb
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.testing import FakeDatasets
from modelforge_trainer.validation import KUBEFLOW_BACKEND, validate_request
from modelforge_training.distributed import distributed_training_arguments, rank_info, under_torchrun
from modelforge_training.events import PipeEventSink
from modelforge_training.launch import describe_failure, torchrun_arguments
from modelforge_training.lifeline import LAUNCHER_ENV, PARENT_ENV, Lifeline
from modelforge_training.spec import TrainingConfig, TrainingJobSpec, distributed_mode, world_size, write_spec

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False)
TWO_GPUS = DeviceInfo(cuda=True, bf16=True, unsloth_installed=True, name="test-gpu", gpu_count=2)


@pytest.fixture
def datasets(tmp_path: Path) -> FakeDatasets:
    return FakeDatasets({"chat.jsonl": write_jsonl(text_generation_rows(12), tmp_path / "chat.jsonl")})


async def check(
    model_dir: Path, datasets: FakeDatasets, tmp_path: Path, device: DeviceInfo = CPU, backend: str = "local",
    **fields: object,
):
    request = common_pb2.TrainingConfig(
        task="text-generation", model_name=str(model_dir), dataset="chat.jsonl", **fields  # type: ignore[arg-type]
    )
    return await validate_request(
        request, Hyperparameters(), data_dir=tmp_path, device=device, datasets=datasets, backend=backend
    )


async def refusal(*args: object, **fields: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as refused:
        await check(*args, **fields)  # type: ignore[arg-type]
    return {v.field: v.description for v in refused.value.violations}


async def test_two_processes_default_to_ddp_and_one_process_is_not_distributed(
    model_dir: Path, datasets: FakeDatasets, tmp_path: Path
) -> None:
    two = (await check(model_dir, datasets, tmp_path, processes_per_node=2)).config
    assert (two.processes_per_node, two.num_nodes, two.distributed, world_size(two)) == (2, 1, "ddp", 2)
    fsdp = (await check(model_dir, datasets, tmp_path, processes_per_node=2, distributed="fsdp")).config
    assert fsdp.distributed == "fsdp"
    plain = (await check(model_dir, datasets, tmp_path)).config
    assert (world_size(plain), plain.distributed) == (1, "") and distributed_mode(plain) == ""
    # Named, one process runs under torchrun too (the GPU check's one-process nccl job).
    one = (await check(model_dir, datasets, tmp_path, distributed="ddp")).config
    assert (world_size(one), one.distributed) == (1, "ddp") and distributed_mode(one) == "ddp"
    assert distributed_mode(fsdp) == "fsdp"
    assert distributed_mode(TrainingConfig(processes_per_node=2)) == "ddp"  # the mode left unset


async def test_refusals_say_why(model_dir: Path, datasets: FakeDatasets, tmp_path: Path) -> None:
    problems = await refusal(model_dir, datasets, tmp_path, num_nodes=2)
    assert "kubeflow" in problems["num_nodes"]
    problems = await refusal(model_dir, datasets, tmp_path, processes_per_node=2, strategy="dpo")
    assert "one process" in problems["processes_per_node"]
    problems = await refusal(model_dir, datasets, tmp_path, distributed="ddp", strategy="dpo")
    assert "one process" in problems["distributed"]
    problems = await refusal(model_dir, datasets, tmp_path, TWO_GPUS, processes_per_node=2, provider="unsloth")
    assert "unsloth cannot train in several processes" in problems["provider"]
    problems = await refusal(model_dir, datasets, tmp_path, processes_per_node=2, strategy="qlora", distributed="fsdp")
    assert "4-bit" in problems["distributed"]
    problems = await refusal(model_dir, datasets, tmp_path, processes_per_node=2, distributed="fsdp", use_4bit=True)
    assert "4-bit" in problems["use_4bit"]
    problems = await refusal(model_dir, datasets, tmp_path, TWO_GPUS, processes_per_node=3)
    assert "2 GPU(s)" in problems["processes_per_node"]
    problems = await refusal(model_dir, datasets, tmp_path, processes_per_node=0, num_nodes=2000, distributed="zero")
    assert set(problems) == {"processes_per_node", "num_nodes", "distributed"}


async def test_kubeflow_backend_takes_several_nodes(model_dir: Path, datasets: FakeDatasets, tmp_path: Path) -> None:
    config = (await check(model_dir, datasets, tmp_path, TWO_GPUS, backend=KUBEFLOW_BACKEND,
                          processes_per_node=8, num_nodes=4, distributed="fsdp")).config
    assert (world_size(config), config.distributed) == (32, "fsdp")  # this node's GPUs do not limit pods


def test_fields_travel_in_the_training_config() -> None:
    message = common_pb2.TrainingConfig(task="text-generation", model_name="org/m", dataset="d",
                                        processes_per_node=4, num_nodes=2, distributed="fsdp")
    request = message  # the request is the message itself
    assert (request.processes_per_node, request.num_nodes, request.distributed) == (4, 2, "fsdp")
    unset = common_pb2.TrainingConfig(task="text-generation", model_name="org/m", dataset="d")
    assert not any(unset.HasField(name) for name in ("processes_per_node", "num_nodes", "distributed"))
    config = resolve(request, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d")
    back = resolved_to_pb(config)
    assert (back.processes_per_node, back.num_nodes, back.distributed) == (4, 2, "fsdp")
    single = resolve(unset, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d")
    assert not resolved_to_pb(single).HasField("distributed")


def test_training_arguments_per_mode() -> None:
    assert distributed_training_arguments("", cuda=False) == {}
    ddp = distributed_training_arguments("ddp", cuda=False)
    assert ddp == {"ddp_backend": "gloo", "ddp_find_unused_parameters": False}
    fsdp = distributed_training_arguments("fsdp", cuda=True)
    assert fsdp["ddp_backend"] == "nccl" and fsdp["fsdp"] is True
    assert fsdp["fsdp_config"]["version"] == 2 and fsdp["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    with pytest.raises(ValueError):
        distributed_training_arguments("zero3", cuda=False)


def test_torchrun_command_line(tmp_path: Path) -> None:
    from torch.distributed.run import config_from_args, parse_args

    job = TrainingJobSpec(job_id="train_abc", config=TrainingConfig(processes_per_node=3, distributed="ddp"),
                          output_dir="/o", checkpoint_dir="/c", result_path="/r")
    arguments = torchrun_arguments(tmp_path / "job.json", job, events_fd=7)
    config, _command, command_args = config_from_args(parse_args(arguments))
    assert (config.nproc_per_node, config.min_nodes, config.max_nodes, config.max_restarts) == (3, 1, 1, 0)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "localhost:0" and config.run_id == "train_abc"
    assert command_args[-5:] == [
        "-m", "modelforge_training", str(tmp_path / "job.json"), "--events-path", f"/proc/{os.getpid()}/fd/7"
    ]


def test_failures_name_the_rank_and_how_it_ended() -> None:
    killed = SimpleNamespace(failures={
        1: SimpleNamespace(exitcode=-9, timestamp=10),
        0: SimpleNamespace(exitcode=-15, timestamp=11),  # stopped by the agent afterwards
    })
    assert describe_failure(killed, 2) == (1, "rank 1 of 2 was killed by signal 9 (SIGKILL); "
                                              "the job's other processes were stopped")
    raised = SimpleNamespace(failures={0: SimpleNamespace(exitcode=1, timestamp=5)})
    assert describe_failure(raised, 4)[1].startswith("rank 0 of 4 exited with code 1")
    assert describe_failure(RuntimeError("rendezvous timed out"), 2) == (
        None, "distributed training failed: RuntimeError: rendezvous timed out")


def test_rank_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rank_info({}) == rank_info({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    info = rank_info({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (info.is_main, info.distributed, info.local_rank) == (False, True, 1)
    assert not under_torchrun({}) and under_torchrun({"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert world_size(TrainingConfig(processes_per_node=2, num_nodes=3)) == 6 and world_size(TrainingConfig()) == 1

    # A rank's lifeline watches its launcher; the launcher (no LOCAL_RANK) watches the trainer.
    monkeypatch.setenv(PARENT_ENV, "4242:1.000")
    monkeypatch.setenv(LAUNCHER_ENV, "777")
    assert Lifeline.from_environment(None).parent_pid == 4242
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert Lifeline.from_environment(None).parent_pid == 777


def test_a_rank_other_than_zero_writes_nothing() -> None:
    silent = PipeEventSink(None)
    silent.log("nobody reads this")  # no descriptor: dropped, no error
    silent.error("nor this")
    silent.close()


FAKE_TRAINER = """
import os, subprocess, sys, time
from modelforge_training.lifeline import PARENT_ENV, parent_marker
from modelforge_trainer.orphans import process_start_time
read_fd, write_fd = os.pipe()
env = dict(os.environ, **{PARENT_ENV: parent_marker(os.getpid(), process_start_time(os.getpid()))})
worker = subprocess.Popen([sys.executable, "-m", "modelforge_training", sys.argv[1], "--events-fd",
                           str(write_fd)], pass_fds=(write_fd,), env=env, start_new_session=True)
print(worker.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_ranks_end_with_their_trainer(tmp_path: Path) -> None:
    """kill -9 of the trainer: its distributed worker (the launcher) and the ranks torchrun started in
    sessions of their own all end (the launcher's lifeline ends the ranks; theirs watch the launcher)."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    job_file = tmp_path / "job.json"
    config = TrainingConfig(task="text-generation", model_name=str(tmp_path / "none"), provider="huggingface",
                            strategy="sft", processes_per_node=2, distributed="ddp")
    write_spec(TrainingJobSpec(job_id="train_lifeline", config=config, dataset_path=str(tmp_path / "none.jsonl"),
                               output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ckpt"),
                               result_path=str(tmp_path / "result.json")), job_file)
    trainer = subprocess.Popen([sys.executable, "-c", FAKE_TRAINER, str(job_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None
        launcher = psutil.Process(int(trainer.stdout.readline()))
        deadline = time.monotonic() + 60
        ranks: list[psutil.Process] = []
        while len(ranks) < 2 and time.monotonic() < deadline:
            ranks = [p for p in launcher.children(recursive=True) if "--events-path" in p.cmdline()]
            time.sleep(0.1)
        assert len(ranks) == 2, "torchrun did not start two ranks"
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        _gone, alive = psutil.wait_procs([launcher, *ranks], timeout=15)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        trainer.kill()
