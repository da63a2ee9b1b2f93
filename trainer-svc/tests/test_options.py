"""The accepted option names are names transformers knows (they are kept here so the service need not
import transformers)."""

from __future__ import annotations

from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from modelforge_trainer.options import LR_SCHEDULERS, OPTIMIZERS


def test_schedulers_and_optimizers_exist_in_transformers() -> None:
    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
