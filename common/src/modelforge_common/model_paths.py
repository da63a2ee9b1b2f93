"""Local model folders are confined to configured roots.

A user-given `model_name` is either a local model folder or a Hugging Face Hub id. A folder is used
only when it lies (after following symlinks) inside one of the model roots:

- ``MODELFORGE_MODEL_ROOTS``: folders separated by ``os.pathsep`` (``:`` on Linux);
- when unset or empty: the data dir (registered models, used as bases) and the process's working
  directory (``make demo`` builds its tiny model under ``./.demo``). Tests that build models in temp
  dirs set the variable.

A name that looks like a path (``/``, ``./``, ``../``, ``~``) and is not an allowed folder is refused
with one message whatever the reason (missing, outside the roots, unreadable, too long, an unknown
``~user``), so the answer never tells which host paths exist. Nothing here raises anything but
`InvalidArgument`.

Use::

    roots = model_roots(data_dir)
    folder = resolve_local_model(name, roots, data_dir=data_dir)   # Path, or None for a Hub id
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from modelforge_common.errors import FieldViolation, InvalidArgument

MODEL_ROOTS_ENV = "MODELFORGE_MODEL_ROOTS"
PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
# Errors that resolving or probing a user-given path can raise: ENAMETOOLONG, EACCES, ELOOP (OSError),
# an unknown ~user (RuntimeError), a NUL byte (ValueError).
_PATH_ERRORS = (OSError, RuntimeError, ValueError)
_MAX_SHOWN = 120


def model_roots(data_dir: Path | str | None = None, env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The resolved model roots: MODELFORGE_MODEL_ROOTS, else the data dir (when given) and the cwd."""
    env = os.environ if env is None else env
    configured = [part.strip() for part in env.get(MODEL_ROOTS_ENV, "").split(os.pathsep) if part.strip()]
    if not configured:
        configured = ([str(data_dir)] if data_dir is not None else []) + [os.getcwd()]
    roots: list[Path] = []
    for entry in configured:
        try:
            root = Path(entry).expanduser().resolve()
        except _PATH_ERRORS:
            continue  # an unusable root allows nothing
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def looks_like_path(name: str) -> bool:
    """Whether `name` can only mean a local folder (a Hub id never starts like this)."""
    return name.startswith(PATH_PREFIXES) or name in (".", "..")


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved `path` is one of `roots` or lies below one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def refusal(name: str, field: str = "model_name") -> InvalidArgument:
    """The one error for a path that may not be used: it never says whether the path exists."""
    shown = name if len(name) <= _MAX_SHOWN else name[:_MAX_SHOWN] + "..."
    shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
    description = "is not a model folder inside the allowed model roots (MODELFORGE_MODEL_ROOTS)"
    return InvalidArgument(f"{field} {shown!r} {description}", [FieldViolation(field, description)])


def _allowed_folder(candidate: Path, roots: Sequence[Path]) -> Path | None:
    try:
        resolved = candidate.expanduser().resolve()
        if is_within(resolved, roots) and resolved.is_dir():
            return resolved
    except _PATH_ERRORS:
        return None
    return None


def resolve_local_model(
    name: str,
    roots: Sequence[Path],
    *,
    data_dir: Path | None = None,
    field: str = "model_name",
) -> Path | None:
    """The resolved folder `name` points to, inside `roots`: as given (relative to the cwd), else
    relative to `data_dir`.

    Returns None when `name` does not look like a path and no allowed folder has that name: the
    caller treats it as a Hub id. Raises `refusal` (InvalidArgument) when it looks like a path and is
    not an allowed folder, or cannot be probed at all. Whether the folder holds a model (config.json)
    is the caller's check."""
    name = name.strip()
    if not name or "\x00" in name:
        raise refusal(name.replace("\x00", "\\x00"), field)
    candidates = [Path(name)]
    if data_dir is not None and not name.startswith(("/", "~")):
        candidates.append(Path(data_dir) / name)
    for candidate in candidates:
        found = _allowed_folder(candidate, roots)
        if found is not None:
            return found
    if looks_like_path(name):
        raise refusal(name, field)
    return None
