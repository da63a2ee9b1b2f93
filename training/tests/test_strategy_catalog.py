"""Every (task, strategy) pair the catalogue names loads as a Strategy: every hook the runtime calls is
there (no optional hooks found by probing)."""

from __future__ import annotations

import pytest

from modelforge_training.strategies import IMPLEMENTED, load_strategy
from modelforge_training.strategies.common import Strategy, StrategyFunctions, no_artifacts


@pytest.mark.parametrize(("task", "strategy"), sorted(IMPLEMENTED))
def test_each_implemented_pair_loads_a_strategy(task: str, strategy: str) -> None:
    found = load_strategy(task, strategy)
    assert isinstance(found, Strategy)
    assert callable(found.build_trainer) and callable(found.evaluate) and callable(found.save_artifacts)


def test_only_rlhf_saves_artifacts_beyond_the_adapter() -> None:
    saving = {pair for pair in IMPLEMENTED
              if isinstance(found := load_strategy(*pair), StrategyFunctions) and found.save is not no_artifacts}
    assert saving == {("text-generation", "rlhf")}
