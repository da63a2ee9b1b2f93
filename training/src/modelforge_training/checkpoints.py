"""Trainer checkpoints of a job (checkpoint-<step>/ folders), for stop and resume."""

from __future__ import annotations

from pathlib import Path


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint-<step> folder with the highest step that the Trainer finished writing."""
    found = []
    for folder in checkpoint_dir.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / "trainer_state.json").is_file():
            found.append((int(step), folder))
    return max(found)[1] if found else None
