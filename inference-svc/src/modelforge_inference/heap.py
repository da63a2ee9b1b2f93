"""Keeps the cyclic garbage collector's full collections short in the serving process.

A full (generation 2) collection walks every container object alive: after torch, transformers and a
model are loaded, that is 130 to 210 ms with the GIL held, in which neither the event loop nor the
batcher thread runs, so every request in flight stalls (the 60 to 90 ms slow rounds of the serving
benchmark through the stack: bench/ANALYSIS.md, Serving). `settle()` collects once and then moves
what is alive into the permanent generation (gc.freeze): later full collections walk only what was
made since. Reference counting still frees frozen objects; only cycles among them wait for
`collect_all()`, which unloading a model calls.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """After a long-lived load (start-up, a model): collect, then freeze what is alive."""
    gc.collect()
    gc.freeze()


def collect_all() -> None:
    """A full collection that reaches frozen objects too (a dropped model's cycles), after which the
    survivors are frozen again when they were before."""
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
