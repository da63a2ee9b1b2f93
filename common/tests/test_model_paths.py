"""Model folders are confined to the model roots, and a refusal never tells whether a path exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_common.model_paths import model_roots, resolve_local_model


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "models"
    (root / "tiny").mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "secret-model"
    outside.mkdir(parents=True)
    (root / "escape").symlink_to(outside)
    data_dir = tmp_path / "data"
    (data_dir / "models" / "job_1").mkdir(parents=True)
    return {"root": root, "outside": outside, "data_dir": data_dir}


def refusal_message(name: str, roots: tuple[Path, ...], data_dir: Path | None = None) -> str:
    with pytest.raises(InvalidArgument) as info:
        resolve_local_model(name, roots, data_dir=data_dir)
    assert info.value.violations[0].field == "model_name"
    return info.value.message.replace(repr(name)[1:-1][:120], "<name>")


def test_folders_inside_a_root_resolve(layout: dict[str, Path]) -> None:
    roots = model_roots(env={"MODELFORGE_MODEL_ROOTS": f"{layout['root']}{os.pathsep}{layout['data_dir']}"})
    assert resolve_local_model(str(layout["root"] / "tiny"), roots) == (layout["root"] / "tiny").resolve()
    # Relative to the data dir: a registered model used as a base.
    found = resolve_local_model("models/job_1", roots, data_dir=layout["data_dir"])
    assert found == (layout["data_dir"] / "models" / "job_1").resolve()


def test_hub_ids_are_left_to_the_caller(layout: dict[str, Path]) -> None:
    roots = model_roots(env={"MODELFORGE_MODEL_ROOTS": str(layout["root"])})
    assert resolve_local_model("org/some-model", roots, data_dir=layout["data_dir"]) is None


def test_missing_outside_and_escaping_paths_get_one_message(layout: dict[str, Path]) -> None:
    roots = model_roots(env={"MODELFORGE_MODEL_ROOTS": str(layout["root"])})
    missing = refusal_message(str(layout["root"] / "nope"), roots)
    outside = refusal_message(str(layout["outside"]), roots)
    escaping = refusal_message(str(layout["root"] / "escape"), roots)
    dotdot = refusal_message(f"{layout['root']}/../elsewhere/secret-model", roots)
    assert missing == outside == escaping == dotdot
    assert "MODELFORGE_MODEL_ROOTS" in missing


@pytest.mark.parametrize(
    "name", ["~nosuchuser", "~nosuchuser/model", "/" + "a" * 300, "/proc/1/root", "/proc/1/root/etc", "/", "../..",
             "./a\x00b", "/etc/" + "b" * 5000],
)
def test_hostile_names_are_a_clean_invalid_argument(layout: dict[str, Path], name: str) -> None:
    roots = model_roots(env={"MODELFORGE_MODEL_ROOTS": str(layout["root"])})
    with pytest.raises(InvalidArgument) as info:
        resolve_local_model(name, roots, data_dir=layout["data_dir"])
    assert len(info.value.message) < 300


def test_default_roots_are_the_data_dir_and_the_working_directory(tmp_path: Path) -> None:
    assert model_roots(tmp_path, env={}) == (tmp_path.resolve(), Path.cwd().resolve())
    assert model_roots(None, env={"MODELFORGE_MODEL_ROOTS": " "}) == (Path.cwd().resolve(),)
