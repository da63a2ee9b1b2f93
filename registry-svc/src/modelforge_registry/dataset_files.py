"""The files of an uploaded dataset: the temporary part an upload streams into, the sidecars
beside the stored file (column mapping, source), putting it in place without overwriting, and
sweeping parts a crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from modelforge_common.dataset_rows import mapping_path, source_path
from modelforge_common.errors import ResourceExhausted

log = logging.getLogger(__name__)

PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"


class PartFile:
    """A temporary upload file that counts, hashes and caps what is written to it."""

    def __init__(self, directory: Path, limit_bytes: int) -> None:
        fd, path = tempfile.mkstemp(prefix=PART_PREFIX, suffix=PART_SUFFIX, dir=directory)
        self.path = Path(path)
        self.limit_bytes = limit_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._handle: BinaryIO | None = os.fdopen(fd, "wb")

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, chunk: bytes) -> None:
        assert self._handle is not None, "write after close"
        self.size += len(chunk)
        if self.size > self.limit_bytes:
            raise ResourceExhausted(f"Dataset exceeds the upload limit of {self.limit_bytes} bytes")
        self._handle.write(chunk)
        self._digest.update(chunk)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Makes a new name in `directory` durable (the file's own bytes were fsynced before)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


class _Digest(Protocol):
    """A hashlib hash, as far as the reader uses it."""

    def update(self, data: bytes, /) -> None: ...


class HashingReader:
    """A binary handle's readline (what the shared line splitter reads, each line capped) that hashes
    every byte it hands out."""

    def __init__(self, handle: BinaryIO, digest: _Digest) -> None:
        self.handle = handle
        self.digest = digest

    def readline(self, limit: int = -1) -> bytes:
        line = self.handle.readline(limit)
        self.digest.update(line)
        return line


def write_mapping(target: Path, mapping: Mapping[str, str] | None) -> None:
    """The mapping beside the dataset file (durably), or no file there at all."""
    path = mapping_path(target)
    if not mapping:
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as handle:
        json.dump(dict(mapping), handle, ensure_ascii=False, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def write_source(target: Path, source: Mapping[str, str] | None) -> None:
    """Where the rows came from, beside the file, for what was not uploaded as JSONL (the trainer
    copies it into the model's lineage)."""
    path = source_path(target)
    if not source or source.get("format") == "jsonl":
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as handle:
        json.dump(dict(source), handle, ensure_ascii=False, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def unlink_with_sidecars(target: Path) -> None:
    target.unlink(missing_ok=True)
    mapping_path(target).unlink(missing_ok=True)
    source_path(target).unlink(missing_ok=True)


def claim(source: Path, target: Path) -> bool:
    """Puts source's content at target unless target exists (never overwrites); False when taken."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        # A filesystem without hard links: reserve the name exclusively, then replace it.
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        try:
            os.replace(source, target)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        return True


def remove_stale_parts(directory: Path, grace_s: float) -> None:
    """Removes temporary upload files left by a crash (older than grace_s: another replica
    may be receiving one right now)."""
    now = time.time()
    for part in directory.glob(f"{PART_PREFIX}*{PART_SUFFIX}"):
        try:
            if now - part.stat().st_mtime < grace_s:
                continue
        except FileNotFoundError:
            continue
        log.warning("removing unfinished upload %s", part.name)
        part.unlink(missing_ok=True)
