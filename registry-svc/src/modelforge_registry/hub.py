"""One split of a Hugging Face Hub dataset, fetched once into the registry's Hub cache.

huggingface_hub's own cache does the "once": a snapshot lives under
<cache>/datasets--<org>--<name>/snapshots/<commit sha>/ and refs/<branch> names the sha a branch
or tag resolved to, so a registered revision is read from the cache afterwards (and offline, with
HF_HUB_OFFLINE=1 or `offline`). The split's files are found the way the Hub lays out data files:
under the config's folder when there is one, named after the split (train.jsonl, train-00000-of-00002.parquet,
data/train-*.csv, or a folder named after the split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelforge_common.errors import FieldViolation, InvalidArgument, NotFound, Unavailable
from modelforge_registry.tables import table_format

# The Hub's repository id rule: [org/]name, letters, digits, "-", "_" and ".", at most 96 characters.
HUB_DATASET_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True)
class HubSplit:
    repo_id: str
    config: str
    split: str
    revision: str
    sha: str
    files: tuple[Path, ...]
    fmt: str


def check_request(repo_id: str, config: str, split: str, revision: str) -> None:
    problems = []
    if not HUB_DATASET_ID.match(repo_id) or ".." in repo_id:
        problems.append(FieldViolation("repo_id", "must be a Hub dataset id such as 'org/name'"))
    if config and (not SPLIT_NAME.match(config) or ".." in config):
        problems.append(FieldViolation("config", "must be a config name (letters, digits, '-', '_', '.')"))
    if not SPLIT_NAME.match(split or "") or ".." in split:
        problems.append(FieldViolation("split", "must be a split name such as train"))
    if revision and (not _REVISION.match(revision) or ".." in revision):
        problems.append(FieldViolation("revision", "must be a branch, tag or commit sha"))
    if problems:
        shown = "; ".join(f"{p.field} {p.description}" for p in problems)
        raise InvalidArgument(f"Invalid Hub dataset: {shown}", problems)


def _split_files(root: Path, config: str, split: str) -> list[Path]:
    """Data files of one split inside a snapshot folder, in shard order."""
    base = root / config if config and config != "default" and (root / config).is_dir() else root
    if config and config != "default" and base == root:
        raise NotFound(f"The Hub dataset has no config {config!r}")
    found = []
    for path in sorted(base.rglob("*")):
        if not path.is_file() or table_format(path.name) is None:
            continue
        relative = path.relative_to(base).parts
        name = path.name.lower()
        named = name.startswith((f"{split.lower()}.", f"{split.lower()}-", f"{split.lower()}_"))
        if named or split.lower() in (part.lower() for part in relative[:-1]):
            found.append(path)
    return found


def fetch_split(
    repo_id: str, config: str, split: str, revision: str, cache_dir: Path, token: str | None, offline: bool
) -> HubSplit:
    """The split's files in the cache (fetching the snapshot when it is not there yet)."""
    check_request(repo_id, config, split, revision)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [f"*.{suffix}" for suffix in ("jsonl", "json", "csv", "parquet")]
    patterns += [f"**/*.{suffix}" for suffix in ("jsonl", "json", "csv", "parquet")]
    try:
        folder = snapshot_download(
            repo_id,
            repo_type="dataset",
            revision=revision or None,
            cache_dir=cache_dir,
            token=token or None,
            local_files_only=offline,
            allow_patterns=patterns,
        )
    except HFValidationError as exc:
        raise InvalidArgument(
            f"Invalid Hub dataset id {repo_id}: {exc}", [FieldViolation("repo_id", "must be a Hub dataset id")]
        ) from None
    except RepositoryNotFoundError:
        raise NotFound(
            f"Hub dataset {repo_id} not found (or it is private and the server's token cannot read it)"
        ) from None
    except RevisionNotFoundError:
        raise NotFound(f"Hub dataset {repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise Unavailable(
            f"The Hugging Face Hub cannot be reached and {repo_id}"
            f"{'@' + revision if revision else ''} is not in the registry's Hub cache: try again when it is online"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise Unavailable(f"The Hugging Face Hub could not be reached to fetch {repo_id}: {exc}") from None
    root = Path(str(folder))
    files = _split_files(root, config, split)
    if not files:
        in_config = f" in config {config!r}" if config else ""
        raise NotFound(f"Hub dataset {repo_id} has no data files for split {split!r}{in_config}")
    formats = {table_format(path.name) for path in files}
    if len(formats) > 1:
        raise InvalidArgument(
            f"Split {split!r} of {repo_id} mixes file formats ({', '.join(sorted(f or '' for f in formats))})",
            [FieldViolation("split", "must hold files of one format")],
        )
    return HubSplit(repo_id, config, split, revision, root.name, tuple(files), str(formats.pop()))
