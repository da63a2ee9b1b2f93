"""RenderedBodies: a JSON body per distinct message, never a stale one."""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel

from modelforge.v1 import registry_pb2
from modelforge_gateway.rendered import RenderedBodies


class Named(BaseModel):
    name: str
    size_mb: float


class Renders:
    """Counts how often a body was actually rendered."""

    def __init__(self) -> None:
        self.calls = 0

    def of(self, model: registry_pb2.Model) -> Callable[[], Named]:
        def render() -> Named:
            self.calls += 1
            return Named(name=model.name, size_mb=model.size_mb)

        return render


def test_the_same_message_is_rendered_once() -> None:
    bodies = RenderedBodies()
    renders = Renders()
    model = registry_pb2.Model(model_id="m1", name="tiny", size_mb=1.5)
    first = bodies.body(model, renders.of(model))
    again = bodies.body(registry_pb2.Model(model_id="m1", name="tiny", size_mb=1.5), renders.of(model))
    assert first is again and renders.calls == 1
    assert json.loads(first) == {"name": "tiny", "size_mb": 1.5}
    assert (bodies.hits, bodies.misses) == (1, 1)


def test_a_changed_message_is_rendered_afresh() -> None:
    bodies = RenderedBodies()
    renders = Renders()
    model = registry_pb2.Model(model_id="m1", name="tiny")
    bodies.body(model, renders.of(model))
    renamed = registry_pb2.Model(model_id="m1", name="renamed")
    assert json.loads(bodies.body(renamed, renders.of(renamed)))["name"] == "renamed"
    assert renders.calls == 2


def test_the_least_recently_used_body_is_evicted() -> None:
    bodies = RenderedBodies(capacity=2)
    renders = Renders()
    models = [registry_pb2.Model(model_id=f"m{i}", name=f"n{i}") for i in range(3)]
    for model in models[:2]:
        bodies.body(model, renders.of(model))
    bodies.body(models[0], renders.of(models[0]))  # m0 is now the most recent
    bodies.body(models[2], renders.of(models[2]))  # evicts m1
    assert len(bodies) == 2 and renders.calls == 3
    bodies.body(models[0], renders.of(models[0]))
    assert renders.calls == 3
    bodies.body(models[1], renders.of(models[1]))
    assert renders.calls == 4
