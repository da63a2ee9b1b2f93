from __future__ import annotations

from google.protobuf import json_format

from modelforge.v1 import common_pb2, events_pb2
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.convert import event_to_pb, job_to_pb, model_to_pb
from modelforge_trainer.jobs import JobRegistry
from modelforge_trainer.ports import ModelRecord
from modelforge_trainer.runner import default_model_name
from modelforge_training.protocol import Progress


def test_unset_optional_fields_stay_unset() -> None:
    request = common_pb2.TrainingConfig(task="text-generation", model_name="org/m", learning_rate=1e-4, max_steps=0)
    assert request.learning_rate == 1e-4
    assert request.max_steps == 0  # set, even though it is the zero value
    assert not request.HasField("lora_r") and not request.HasField("bf16") and not request.HasField("name")
    assert request.force is False


def test_jobs_and_events_carry_the_resolved_config_and_state() -> None:
    request = common_pb2.TrainingConfig(task="text-generation", model_name="org/m", dataset="d")
    config = resolve(request, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/data/d")
    job = JobRegistry().create(request, config)
    job.mark_running()
    event = job.update_progress(
        Progress(step=2, total_steps=4, epoch=0.5, current_epoch=1, total_epochs=1, progress=50.0, loss=1.25)
    )
    message = job_to_pb(job)
    assert message.status == common_pb2.JOB_STATUS_RUNNING
    assert (message.current_step, message.total_steps, message.progress, message.loss) == (2, 4, 50.0, 1.25)
    assert not message.HasField("learning_rate")
    assert message.config.lora_r == Hyperparameters().lora_r and message.config.HasField("bf16")
    assert not message.config.HasField("name")
    assert message.last_seq == 2 and message.HasField("started_at") and not message.HasField("finished_at")
    pb = event_to_pb(event)
    assert (pb.kind, pb.seq, pb.job_id, pb.message) == (
        events_pb2.EVENT_KIND_PROGRESS,
        2,
        job.job_id,
        "Training epoch 1/1 - Step 2/4",
    )
    assert pb.timestamp.seconds > 0


def test_model_records_become_registry_models() -> None:
    record = ModelRecord(
        name="m",
        base_model="/models/tiny",
        task="text-generation",
        strategy="sft",
        provider="huggingface",
        path="/data/models/train_x",
        config={"lora_r": 16, "bf16": False, "lora_target_modules": "all-linear"},
        training_params={"num_epochs": 3.0, "batch_size": 2.0, "learning_rate": 2e-4},
        metrics={"final_loss": 1.0},
        job_id="train_x",
    )
    model = model_to_pb(record)
    assert json_format.MessageToDict(model.config) == {"lora_r": 16, "bf16": False, "lora_target_modules": "all-linear"}
    assert dict(model.metrics) == {"final_loss": 1.0} and model.adapter_type == "lora"


def test_default_model_names() -> None:
    request = common_pb2.TrainingConfig(task="summarization", model_name="org/m", dataset="d")
    config = resolve(request, Hyperparameters(), model_name="/models/tiny-llama/", local_model=True, dataset_path="")
    assert default_model_name(config.config, "train_20240315_143022_ab12") == "tiny-llama-summarization-ab12"


def test_gradient_checkpointing_travels_only_when_set() -> None:
    from modelforge_trainer.convert import resolved_to_pb

    asked = (
        common_pb2.TrainingConfig(task="text-generation", model_name="org/m", gradient_checkpointing=False)
    )
    assert asked.gradient_checkpointing is False  # set, even though it is the zero value
    config = resolve(asked, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d")
    message = resolved_to_pb(config)
    assert message.HasField("gradient_checkpointing") and message.gradient_checkpointing is False
    unset = resolve(
        (common_pb2.TrainingConfig(task="text-generation", model_name="org/m")),
        Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d",
    )
    assert not resolved_to_pb(unset).HasField("gradient_checkpointing")
