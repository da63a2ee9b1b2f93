"""The accepted option names (modelforge_common.training_options, so neither the gateway nor the trainer
service need import transformers to validate) are names transformers knows."""

from __future__ import annotations

from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from modelforge_common.training_options import LR_SCHEDULERS, OPTIMIZERS


def test_schedulers_and_optimizers_exist_in_transformers() -> None:
    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
