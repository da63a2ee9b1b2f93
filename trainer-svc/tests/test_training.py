"""Real training: the real gRPC server and worker processes, a private nats-server, a fake RegistryService
over gRPC, and the devkit's tiny Llama on 20 chat rows for a few CPU steps."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf import json_format

from modelforge.v1 import common_pb2, events_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_client import make_channel
from modelforge_common.grpc_server import build_server
from modelforge_common.testing import nats_server, training_events_until
from modelforge_trainer.app import build_app
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.runner import JobPaths
from modelforge_trainer.settings import TrainerSettings
from modelforge_trainer.testing_grpc import FakeRegistryServicer

pytestmark = pytest.mark.slow

CPU = DeviceInfo(cuda=False, bf16=False, unsloth_installed=False)
TERMINAL = {common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_ERROR, common_pb2.JOB_STATUS_STOPPED}
WAIT_S = 240.0


@dataclass
class Stack:
    stub: trainer_pb2_grpc.TrainerServiceStub
    registry: FakeRegistryServicer
    nats_url: str
    data_dir: Path


@pytest.fixture
async def stack(data_dir: Path, chat_dataset: Path) -> AsyncIterator[Stack]:
    registry = FakeRegistryServicer({"chat.jsonl": chat_dataset})
    registry_server, registry_port, _ = build_server(
        [(registry_pb2_grpc.add_RegistryServiceServicer_to_server, registry, "modelforge.v1.RegistryService")],
        "127.0.0.1:0",
    )
    await registry_server.start()
    with nats_server() as nats:
        settings = TrainerSettings(
            data_dir=data_dir,
            nats_url=nats.url,
            registry_addr=f"127.0.0.1:{registry_port}",
            memory_check=False,
            stop_grace_s=10,
            log_json=False,
            durable_jobs=False,  # the fake registry keeps no job records; tests/e2e cover durable jobs
        )
        app = build_app(settings, bind="127.0.0.1:0", device=CPU)  # the real RegistryClient and worker
        await app.start()
        try:
            async with make_channel(f"127.0.0.1:{app.port}") as channel:
                yield Stack(trainer_pb2_grpc.TrainerServiceStub(channel), registry, nats.url, settings.data_dir)
        finally:
            await app.stop()
            await registry_server.stop(0)


def training_config(model: Path, **fields: object) -> common_pb2.TrainingConfig:
    base: dict[str, object] = {
        "task": "text-generation",
        "model_name": str(model),
        "dataset": "chat.jsonl",
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 64,
        "max_steps": 5,
        "learning_rate": 5e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant",
        "seed": 3,
    }
    base.update(fields)
    return common_pb2.TrainingConfig(**base)


async def events_until(nats_url: str, job_id: str, until) -> list[events_pb2.TrainingEvent]:
    return await training_events_until(nats_url, job_id, until, WAIT_S)


def ended(event: events_pb2.TrainingEvent) -> bool:
    return event.kind == events_pb2.EVENT_KIND_STATUS and event.status in TERMINAL


def worker_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "modelforge_training" in " ".join(child.cmdline())
    ]


async def test_kill_9_then_a_job_trains_registers_and_its_adapter_stops_at_eos(
    stack: Stack, tiny_causal_model: Path
) -> None:
    # A long job: refused company, then killed mid-training.
    long_job = (
        await stack.stub.StartTraining(
            trainer_pb2.StartTrainingRequest(config=training_config(tiny_causal_model, max_steps=100_000)), timeout=30
        )
    ).job
    assert long_job.status == common_pb2.JOB_STATUS_RUNNING
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stack.stub.StartTraining(
            trainer_pb2.StartTrainingRequest(config=training_config(tiny_causal_model)), timeout=30
        )
    assert conflict.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert conflict.value.details() == f"A training job is already running: {long_job.job_id}"

    await events_until(stack.nats_url, long_job.job_id, lambda e: e.current_step >= 1)
    (worker,) = worker_children()
    assert worker.pid == int(JobPaths(stack.data_dir).pid_file(long_job.job_id).read_text())
    os.kill(worker.pid, signal.SIGKILL)
    killed = await events_until(stack.nats_url, long_job.job_id, ended)
    assert killed[-1].status == common_pb2.JOB_STATUS_ERROR
    assert killed[-1].error.startswith("training process was killed by signal 9 (SIGKILL)")

    # The service is still up: the next job trains to the end.
    job = (
        await stack.stub.StartTraining(
            trainer_pb2.StartTrainingRequest(config=training_config(tiny_causal_model, max_steps=60, name="tiny-sft")),
            timeout=30,
        )
    ).job
    events = await events_until(stack.nats_url, job.job_id, ended)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    final = events[-1]
    assert final.status == common_pb2.JOB_STATUS_COMPLETED, final.error
    progress = [e for e in events if e.kind == events_pb2.EVENT_KIND_PROGRESS and e.current_step > 0]
    assert [p.current_step for p in progress] == list(range(1, 61))
    assert all(p.HasField("loss") and math.isfinite(p.loss) and p.total_steps == 60 for p in progress)
    assert progress[-1].progress == 100.0 and progress[-1].current_epoch == progress[-1].total_epochs
    assert any(e.kind == events_pb2.EVENT_KIND_METRIC and "eval_loss" in e.metrics for e in events)

    (model,) = stack.registry.registered
    assert final.model_id == model.model_id
    assert set(model.metrics) == {"final_loss", "eval_loss", "perplexity", "trained_tokens"}
    assert all(math.isfinite(v) for v in model.metrics.values())
    assert model.metrics["perplexity"] == pytest.approx(math.exp(model.metrics["eval_loss"]))
    assert (model.name, model.task, model.strategy, model.provider, model.adapter_type, model.job_id) == (
        "tiny-sft",
        "text-generation",
        "sft",
        "huggingface",
        "lora",
        job.job_id,
    )
    assert model.base_model == str(tiny_causal_model)
    adapter = Path(model.path)
    assert adapter == JobPaths(stack.data_dir).model_dir(job.job_id)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer_config.json").is_file()
    used = json_format.MessageToDict(model.config)
    assert (used["max_steps"], used["lora_r"], used["learning_rate"], used["precision"]) == (60, 16, 5e-3, "fp32")
    assert json_format.MessageToDict(model.training_params) == {
        "num_epochs": 3.0,
        "batch_size": 2.0,
        "learning_rate": 5e-3,
    }

    # The chat template ends every answer with EOS: the adapter learned to stop.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_causal_model), adapter).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where does the red fox live?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = tuned.generate(**prompt, max_new_tokens=48, do_sample=False)
    new_tokens = output[0, prompt["input_ids"].shape[1] :].tolist()
    assert new_tokens[-1] == tokenizer.eos_token_id and len(new_tokens) < 48
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).startswith("The ")
