"""The data directory the registry owns: confinement of paths, digests, and a trash folder that
makes deletion of a folder a single rename (see models.ModelCatalog.delete)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MODELS_DIR = "models"
DATASETS_DIR = "datasets"
TRASH_DIR = ".trash"


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_digest(folder: Path) -> tuple[int, dict[str, str]]:
    """Total size in bytes and sha256 per regular file (by relative path, "/"-separated).
    Symbolic links are neither followed nor hashed: they could point outside the folder."""
    total = 0
    digests: dict[str, str] = {}
    for parent, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(parent) / name
            if path.is_symlink() or not path.is_file():
                continue
            total += path.stat().st_size
            digests[path.relative_to(folder).as_posix()] = sha256_of(path)
    return total, digests


def newest_mtime(path: Path) -> float:
    """Latest modification time of a folder or anything in it (a writer may still be filling it)."""
    newest = path.lstat().st_mtime
    for parent, dirs, files in os.walk(path, followlinks=False):
        for name in [*files, *dirs]:
            try:
                newest = max(newest, (Path(parent) / name).lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


class DataDir:
    """<root>/models, <root>/datasets and <root>/.trash; every path the registry deletes is inside root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        for sub in (MODELS_DIR, DATASETS_DIR, TRASH_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def models(self) -> Path:
        return self.root / MODELS_DIR

    @property
    def datasets(self) -> Path:
        return self.root / DATASETS_DIR

    @property
    def trash(self) -> Path:
        return self.root / TRASH_DIR

    def inside(self, raw: str | Path) -> Path | None:
        """The real path (symlinks resolved, relative paths taken from root) when it lies strictly
        inside root, else None."""
        if "\x00" in str(raw):
            return None
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if real == self.root or not real.is_relative_to(self.root):
            return None
        return real

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def can_hold_model(self, path: Path) -> bool:
        """False for the registry's own top-level folders, anything containing them, and anything
        inside datasets/ or the trash: deleting such a model would delete what is not its own."""
        reserved = (self.models, self.datasets, self.trash)
        return not any(r.is_relative_to(path) for r in reserved) and not any(
            path.is_relative_to(r) for r in (self.datasets, self.trash)
        )

    def move_to_trash(self, path: Path, label: str) -> Path | None:
        """Moves a file or folder into the trash in one rename; None when it is already gone."""
        target = self.trash / f"{label}.{secrets.token_hex(4)}"
        try:
            path.rename(target)
        except FileNotFoundError:
            return None
        return target

    def empty_trash(self) -> None:
        for entry in self.trash.iterdir():
            log.info("removing %s from the trash", entry.name)
            remove(entry)


def remove(path: Path) -> None:
    """Deletes a file or folder; a path already gone is fine (another replica may have removed it)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_file(path: Path) -> bool:
    """Path.is_file that answers False for unusable paths (a name too long, say) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
