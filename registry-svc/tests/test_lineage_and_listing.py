"""Lineage storage, parent models, filtered and paged listing, and two registries writing at once,
against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelforge.v1 import registry_pb2
from modelforge_common.errors import AlreadyExists, InvalidArgument
from modelforge_registry import convert
from modelforge_registry.app import Registry, open_registry
from modelforge_registry.domain import ModelFilter, NewModel

MakeFolder = Callable[..., Path]


def lineage(base: str = "org/Tiny", status: str = "completed") -> dict[str, Any]:
    """A lineage as the trainer sends it, through the proto and back (as RegisterModel does)."""
    message = registry_pb2.Lineage(
        base_model=registry_pb2.LineageBaseModel(name=base, config_sha256="ab" * 32, revision="c0ffee"),
        dataset=registry_pb2.LineageDataset(
            filename="d.jsonl", sha256="cd" * 32, num_rows=12, train_rows=10, eval_rows=2, eval_split=0.1, seed=42
        ),
        task="text-generation",
        strategy="sft",
        provider="huggingface",
        environment=registry_pb2.LineageEnvironment(versions={"torch": "2.13.0"}, device="cpu", python="3.12"),
        job=registry_pb2.LineageJob(job_id="train_1", duration_s=12.5, status=status, owner="alice"),
        metrics={"final_loss": 0.5},
        loss_curve=[
            registry_pb2.LossPoint(step=1, loss=2.0, learning_rate=1e-4, epoch=0.5),
            registry_pb2.LossPoint(step=2, loss=1.5, epoch=1.0),
        ],
    )
    message.config.update({"learning_rate": 0.0002, "seed": 42})
    message.job.started_at.FromSeconds(1_700_000_000)
    return convert.lineage_dict(message)


def test_lineage_is_stored_and_served_losslessly(registry: Registry, model_folder: MakeFolder) -> None:
    sent = lineage()
    model = registry.models.register(NewModel(path=str(model_folder("a")), lineage=sent, job_id="train_1"))
    assert model.lineage == sent
    assert model.status == "completed"
    got = registry.models.get(model.model_id)
    assert got.lineage == sent
    message = convert.model_pb(got).lineage
    assert message.dataset.seed == 42 and message.loss_curve[1].HasField("learning_rate") is False
    assert message.loss_curve[0].learning_rate == pytest.approx(1e-4)
    assert convert.lineage_dict(message) == sent
    # Registered without lineage: none, and no job status.
    bare = registry.models.register(NewModel(path=str(model_folder("b"))))
    assert (bare.lineage, bare.status) == (None, "")
    assert not convert.model_pb(bare).HasField("lineage")


def test_a_run_on_a_registered_model_names_its_parent(registry: Registry, model_folder: MakeFolder) -> None:
    parent_folder = model_folder("sft-run")
    parent = registry.models.register(NewModel(path=str(parent_folder), lineage=lineage()))
    child = registry.models.register(NewModel(path=str(model_folder("dpo-run")), lineage=lineage(str(parent_folder))))
    assert child.lineage is not None and child.lineage["parent_model_id"] == parent.model_id
    # A sub-folder of a registered model (e.g. its merged weights) has the same parent.
    nested = registry.models.register(
        NewModel(path=str(model_folder("other")), lineage=lineage(str(parent_folder / "sub")))
    )
    assert nested.lineage is not None and nested.lineage["parent_model_id"] == parent.model_id
    assert "parent_model_id" not in (parent.lineage or {})


def test_an_unknown_lineage_status_is_refused(registry: Registry, model_folder: MakeFolder) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.models.register(NewModel(path=str(model_folder("a")), lineage=lineage(status="finished")))
    assert [v.field for v in info.value.violations] == ["lineage.job.status"]
    assert registry.models.list() == []


def test_listing_filters_pages_and_counts(registry: Registry, model_folder: MakeFolder) -> None:
    def register(folder: str, **values: Any) -> str:
        return registry.models.register(NewModel(path=str(model_folder(folder)), **values)).model_id

    a = register(
        "a", task="summarization", base_model="org/A", strategy="sft", provider="huggingface", lineage=lineage()
    )
    b = register(
        "b", task="text-generation", base_model="org/B", strategy="dpo", provider="huggingface", lineage=lineage()
    )
    c = register("c", task="text-generation", base_model="org/A", strategy="sft", provider="unsloth")
    d = register(
        "d", task="text-generation", base_model="org/A", strategy="sft", provider="huggingface", lineage=lineage()
    )

    def ids(**filters: Any) -> tuple[list[str], int]:
        page = registry.models.search(ModelFilter(**filters))
        return [m.model_id for m in page.models], page.total

    assert ids() == ([d, c, b, a], 4)
    assert ids(task="text-generation") == ([d, c, b], 3)
    assert ids(base_model="org/A", strategy="sft") == ([d, c, a], 3)
    assert ids(provider="unsloth") == ([c], 1)
    assert ids(status="completed") == ([d, b, a], 3)
    assert ids(base_model="org/A", limit=2) == ([d, c], 3)
    assert ids(base_model="org/A", limit=2, offset=2) == ([a], 3)
    assert ids(offset=9) == ([], 4)
    assert ids(base_model="org/none") == ([], 0)

    with pytest.raises(InvalidArgument) as info:
        registry.models.search(ModelFilter(status="done", limit=-1))
    assert [v.field for v in info.value.violations] == ["limit", "status"]
    with pytest.raises(InvalidArgument) as info:
        registry.models.search(ModelFilter(base_model="a\x00b"))
    assert [v.field for v in info.value.violations] == ["base_model"]


def test_two_registries_registering_at_once_never_collide(
    registry: Registry, database_url: str, data_dir: Path, model_folder: MakeFolder
) -> None:
    """Two registry processes (separate engines and pools) on one database, as two replicas behind
    two trainers: derived names stay unique, and a user-given name goes to exactly one writer."""
    other = open_registry(data_dir, database_url, max_upload_bytes=1024, orphan_grace_s=3600)
    try:
        folders = [model_folder(f"run{i}") for i in range(6)]
        stores = [registry, other] * 3
        with ThreadPoolExecutor(max_workers=6) as pool:
            models = list(
                pool.map(
                    lambda store, folder: store.models.register(
                        NewModel(path=str(folder), base_model="org/Tiny", strategy="sft")
                    ),
                    stores,
                    folders,
                )
            )
        assert len({m.name for m in models}) == len({m.model_id for m in models}) == len({m.id for m in models}) == 6

        barrier = threading.Barrier(2)

        def claim(store: Registry, folder: Path) -> str:
            barrier.wait()
            try:
                return store.models.register(NewModel(path=str(folder), name="shared-name")).model_id
            except AlreadyExists as exc:
                assert exc.message == "Model name 'shared-name' is already taken"
                return "taken"

        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(claim, [registry, other], [model_folder("x"), model_folder("y")]))
        assert outcomes.count("taken") == 1
        winner = next(o for o in outcomes if o != "taken")
        assert registry.models.get(winner).name == "shared-name"
    finally:
        other.close()
