"""heap.py: frozen start-up objects stay out of full collections, yet a dropped model's cycles are freed."""

from __future__ import annotations

import gc
import weakref

from modelforge_inference import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_collect_all_frees_frozen_cycles_and_keeps_the_survivors_frozen() -> None:
    gc.unfreeze()
    try:
        node = _Node()
        alive = weakref.ref(node)
        heap.settle()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: a full collection leaves it
        heap.collect_all()
        assert alive() is None
        assert gc.get_freeze_count() > 0  # what survived is frozen again
    finally:
        gc.unfreeze()


def test_collect_all_without_a_freeze_leaves_nothing_frozen() -> None:
    gc.unfreeze()
    heap.collect_all()
    assert gc.get_freeze_count() == 0
