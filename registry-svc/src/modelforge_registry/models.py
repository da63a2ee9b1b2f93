"""Registered fine-tuned models: a row per model plus the folder of its files under the data dir.

Deletion keeps row and files consistent across a crash at any point:
  1. mark the row "deleting" (it disappears from Get/List),
  2. move the folder into <data_dir>/.trash in one rename,
  3. delete the row,
  4. remove the trashed folder.
`recover()` (run at startup) finishes every row left "deleting", empties the trash, and removes
folders under <data_dir>/models that no row refers to.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from modelforge_common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from modelforge_registry.domain import JOB_STATUSES, TERMINAL_JOB_STATUSES, ModelFilter, ModelInfo, ModelPage, NewModel
from modelforge_registry.files import DataDir, folder_digest, is_dir, newest_mtime, remove
from modelforge_registry.store import Database, ModelRecord, as_utc, check_text, utc_now
from modelforge_registry.store.orm import MODEL_ACTIVE, MODEL_DELETING, JobRecord

log = logging.getLogger(__name__)

# What only a model's details carry: a listing's summaries leave these out.
_DETAIL_COLUMNS = (ModelRecord.config, ModelRecord.file_sha256, ModelRecord.lineage)

ADAPTER_TYPES = ("lora", "full")
MAX_NAME_LENGTH = 255  # the name column's length
_MAX_INT_ID = 2**31 - 1  # the id column is a 32-bit integer on PostgreSQL
_REGISTER_ATTEMPTS = 5
_BYTES_PER_MB = 1024 * 1024
_FILTERS = ("task", "base_model", "strategy", "provider", "status")


def new_model_id() -> str:
    """Such as "model_20240315_143022_ab12" (UTC time plus 4 random hex digits)."""
    return f"model_{utc_now():%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"


def derived_name(model: NewModel) -> str:
    """Name for a model registered without one: "<base model's last part>-<strategy>"."""
    base = model.base_model.rstrip("/").rsplit("/", 1)[-1] or "model"
    return f"{base}-{model.strategy or 'finetuned'}"[:MAX_NAME_LENGTH - 8]


class ModelCatalog:
    def __init__(self, database: Database, data_dir: DataDir) -> None:
        self.db = database
        self.data_dir = data_dir

    # -- register -----------------------------------------------------------------------------

    def register(self, model: NewModel) -> ModelInfo:
        folder = self._model_folder(model.path)
        name = model.name.strip()
        relative = self.data_dir.relative(folder)
        check_text(ModelRecord, "model", {
            "name": name, "base_model": model.base_model, "task": model.task, "strategy": model.strategy,
            "provider": model.provider, "job_id": model.job_id, "adapter_type": model.adapter_type, "path": relative,
        })
        if model.adapter_type not in ("", *ADAPTER_TYPES):
            raise InvalidArgument(
                f"Invalid adapter type: {model.adapter_type}",
                [FieldViolation("adapter_type", f"must be one of {', '.join(ADAPTER_TYPES)}")],
            )
        status = _lineage_status(model.lineage)
        size_mb, digests = model.size_mb, dict(model.file_sha256)
        if not size_mb or not digests:
            total_bytes, computed = folder_digest(folder)
            size_mb = size_mb or total_bytes / _BYTES_PER_MB
            digests = digests or computed

        # Registrations take turns, so a derived name is free when chosen; the unique constraints
        # (and a retry) still guard against any other writer.
        for _ in range(_REGISTER_ATTEMPTS):
            try:
                with self.db.transaction() as session:
                    self.db.serialize(session, "models.register")
                    earlier = self._registered_by_job(session, relative, model.job_id)
                    if earlier is not None:
                        # A retry whose first attempt committed but whose answer was lost (a timeout,
                        # a restart): the same job's model in the same folder is that registration.
                        log.info("model of job %s already registered as %s", model.job_id, earlier.model_id)
                        return self._info(earlier)
                    self._check_free(session, relative, name)
                    record = ModelRecord(
                        model_id=new_model_id(),
                        name=name or self._free_name(session, derived_name(model)),
                        base_model=model.base_model,
                        task=model.task,
                        strategy=model.strategy,
                        provider=model.provider,
                        path=relative,
                        size_mb=size_mb,
                        config=dict(model.config),
                        training_params=dict(model.training_params),
                        metrics={k: float(v) for k, v in model.metrics.items()},
                        job_id=model.job_id,
                        adapter_type=model.adapter_type,
                        file_sha256=digests,
                        created_at=utc_now(),
                        state=MODEL_ACTIVE,
                        status=status,
                        lineage=self._with_parent(session, model.lineage),
                    )
                    session.add(record)
                    session.flush()
                    info = self._info(record)
                log.info("registered model %s (%s) at %s", info.model_id, info.name, info.path)
                return info
            except IntegrityError:
                log.info("concurrent registration collided; retrying")
        raise Aborted("Could not register the model: too many concurrent registrations, try again")

    def _with_parent(self, session: Session, lineage: dict[str, Any] | None) -> dict[str, Any] | None:
        """Names the registered model the run started from, when its base is a registered model's
        folder (e.g. DPO on an SFT adapter); the trainer knows only the path."""
        if lineage is None or lineage.get("parent_model_id"):
            return lineage
        base = lineage.get("base_model", {}).get("name", "")
        folder = self.data_dir.inside(base) if isinstance(base, str) and base.startswith("/") else None
        if folder is None:
            return lineage
        relative = self.data_dir.relative(folder)
        parents = session.scalars(select(ModelRecord).where(ModelRecord.state == MODEL_ACTIVE))
        for parent in parents:
            if relative == parent.path or relative.startswith(parent.path + "/"):
                return {**lineage, "parent_model_id": parent.model_id}
        return lineage

    def _model_folder(self, raw_path: str) -> Path:
        if not raw_path:
            raise InvalidArgument("A model path is required", [FieldViolation("path", "must not be empty")])
        folder = self.data_dir.inside(raw_path)
        if folder is None or not self.data_dir.can_hold_model(folder):
            raise InvalidArgument(
                f"Model path {raw_path} is not a model folder inside the data directory",
                [FieldViolation("path", f"must be a folder inside {self.data_dir.root}")],
            )
        if not is_dir(folder):
            raise InvalidArgument(
                f"Model folder {raw_path} does not exist",
                [FieldViolation("path", "must be an existing folder")],
            )
        return folder

    @staticmethod
    def _registered_by_job(session: Session, relative: str, job_id: str) -> ModelRecord | None:
        if not job_id:
            return None
        return session.scalar(
            select(ModelRecord).where(
                ModelRecord.path == relative, ModelRecord.job_id == job_id, ModelRecord.state == MODEL_ACTIVE
            )
        )

    @staticmethod
    def _check_free(session: Session, relative: str, name: str) -> None:
        owner = session.scalar(select(ModelRecord.model_id).where(ModelRecord.path == relative))
        if owner is not None:
            raise AlreadyExists(f"Model folder {relative} is already registered as {owner}")
        if name and session.scalar(select(ModelRecord.id).where(ModelRecord.name == name)) is not None:
            raise AlreadyExists(f"Model name '{name}' is already taken")

    @staticmethod
    def _free_name(session: Session, stem: str) -> str:
        taken = set(session.scalars(select(ModelRecord.name).where(ModelRecord.name.startswith(stem, autoescape=True))))
        if stem not in taken:
            return stem
        number = 2
        while f"{stem}-{number}" in taken:
            number += 1
        return f"{stem}-{number}"

    # -- read ---------------------------------------------------------------------------------

    def get(self, ident: str) -> ModelInfo:
        with self.db.transaction() as session:
            record = self._find(session, ident)
            if record is None or record.state != MODEL_ACTIVE:
                raise NotFound(f"Model {ident} not found")
            return self._info(record)

    def list(self, task: str = "") -> list[ModelInfo]:
        """Newest first, optionally only one task's models."""
        return list(self.search(ModelFilter(task=task)).models)

    def search(self, filters: ModelFilter) -> ModelPage:
        """Newest first; each non-empty filter must match exactly; one page plus the total count."""
        problems = [FieldViolation(name, "must not be negative")
                    for name in ("limit", "offset") if getattr(filters, name) < 0]
        if filters.status and filters.status not in JOB_STATUSES:
            problems.append(FieldViolation("status", f"must be one of {', '.join(JOB_STATUSES)}"))
        if problems:
            raise InvalidArgument(
                "Invalid model listing: " + "; ".join(f"{p.field} {p.description}" for p in problems), problems
            )
        check_text(ModelRecord, "model listing", {name: getattr(filters, name) for name in _FILTERS})
        matching = select(ModelRecord).where(ModelRecord.state == MODEL_ACTIVE)
        for name in _FILTERS:
            value = getattr(filters, name)
            if value:
                matching = matching.where(getattr(ModelRecord, name) == value)
        page = matching.order_by(ModelRecord.created_at.desc(), ModelRecord.id.desc()).offset(filters.offset)
        if filters.limit:
            page = page.limit(filters.limit)
        if not filters.full:
            # A listing never reads these (the lineage holds the loss curve): leave them in the database.
            page = page.options(*(defer(column) for column in _DETAIL_COLUMNS))
        with self.db.transaction() as session:
            models = tuple(self._info(record, full=filters.full) for record in session.scalars(page))
            if filters.limit or filters.offset:
                total = session.scalar(select(func.count()).select_from(matching.subquery())) or 0
            else:
                total = len(models)  # the whole listing: no second query
            return ModelPage(models=models, total=total)

    def count(self) -> int:
        """Registered models (for the models gauge)."""
        with self.db.transaction() as session:
            query = select(func.count()).select_from(ModelRecord).where(ModelRecord.state == MODEL_ACTIVE)
            return int(session.scalar(query) or 0)

    @staticmethod
    def _find(session: Session, ident: str, *, for_update: bool = False) -> ModelRecord | None:
        """By numeric id ("12") or model_id ("model_20240315_143022_ab12")."""
        if not ident:
            raise InvalidArgument("A model id is required", [FieldViolation("model_id", "must not be empty")])
        if "\x00" in ident:
            return None
        if ident.isascii() and ident.isdigit():
            number = int(ident)
            if number > _MAX_INT_ID:
                return None
            query = select(ModelRecord).where(ModelRecord.id == number)
        else:
            query = select(ModelRecord).where(ModelRecord.model_id == ident)
        if for_update:
            query = query.with_for_update()
        return session.scalar(query)

    # -- delete -------------------------------------------------------------------------------

    def delete(self, ident: str) -> ModelInfo:
        """Removes the row and the model's folder; returns the model as it was."""
        with self.db.transaction() as session:
            record = self._find(session, ident, for_update=True)
            if record is None:
                raise NotFound(f"Model {ident} not found")
            folder = self.data_dir.inside(record.path)
            if folder is None or not self.data_dir.can_hold_model(folder):
                raise FailedPrecondition(
                    f"Model {ident}: its folder {self.data_dir.absolute(record.path)} resolves outside the "
                    "data directory; refusing to delete files there"
                )
            # A row already "deleting" is an interrupted deletion: finish it.
            record.state = MODEL_DELETING
            info = self._info(record)
        try:
            trashed = self.data_dir.move_to_trash(folder, record.model_id)
        except OSError as exc:
            # Nothing moved: the model stays as it was.
            with self.db.transaction() as session:
                session.execute(
                    update(ModelRecord).where(ModelRecord.id == record.id).values(state=MODEL_ACTIVE)
                )
            raise FailedPrecondition(f"Could not delete the files of model {ident}: {exc.strerror or exc}") from exc
        self._drop(record.id, trashed)
        log.info("deleted model %s (%s) and its folder %s", info.model_id, info.name, info.path)
        return info

    def discard_unregistered(self, raw_path: str) -> bool:
        """Removes a folder directly under models/ that no registered model refers to (a merge whose
        registration failed); False when it is already gone. Taking turns with registrations, so a
        folder cannot be registered while it is being removed."""
        folder = self.data_dir.inside(raw_path) if raw_path else None
        if folder is None or folder.parent != self.data_dir.models:
            raise InvalidArgument(
                f"Model folder {raw_path} is not a folder directly inside models/",
                [FieldViolation("path", "must be a folder directly inside models/ of the data directory")],
            )
        relative = self.data_dir.relative(folder)
        with self.db.transaction() as session:
            self.db.serialize(session, "models.register")
            registered = session.scalars(select(ModelRecord.path))
            if any(path == relative or path.startswith(relative + "/") for path in registered):
                raise FailedPrecondition(f"Model folder {relative} belongs to a registered model")
            trashed = self.data_dir.move_to_trash(folder, f"discarded-{folder.name}")
        if trashed is None:
            return False
        remove(trashed)
        log.info("removed unregistered model folder %s", relative)
        return True

    def _drop(self, row_id: int, trashed: Path | None) -> None:
        with self.db.transaction() as session:
            session.execute(delete(ModelRecord).where(ModelRecord.id == row_id))
        if trashed is not None:
            remove(trashed)

    # -- startup sweep ------------------------------------------------------------------------

    def recover(self, orphan_grace_s: float) -> None:
        """Finishes interrupted deletions, empties the trash, removes orphan model folders.
        A folder under models/ modified within orphan_grace_s is kept: a trainer may be about to
        register it."""
        with self.db.transaction() as session:
            pending = list(session.execute(
                select(ModelRecord.id, ModelRecord.model_id, ModelRecord.path).where(
                    ModelRecord.state == MODEL_DELETING
                )
            ))
        for row_id, model_id, relative in pending:
            folder = self.data_dir.inside(relative)
            if folder is None or not self.data_dir.can_hold_model(folder):
                log.warning("model %s: folder %s resolves outside the data directory; left in place",
                            model_id, relative)
                folder = None
            log.info("finishing the interrupted deletion of model %s", model_id)
            try:
                trashed = self.data_dir.move_to_trash(folder, model_id) if folder is not None else None
            except OSError:
                log.exception("model %s: could not move %s to the trash; its deletion stays pending", model_id,
                              folder)
                continue
            self._drop(row_id, trashed)
        self.data_dir.empty_trash()
        self._remove_orphans(orphan_grace_s)

    def _remove_orphans(self, grace_s: float) -> None:
        with self.db.transaction() as session:
            registered = set(session.scalars(select(ModelRecord.path)))
            # A job not yet terminal (running, or registering while the registry was away) owns
            # models/<job_id>: its model is on its way here.
            unfinished = set(session.scalars(select(JobRecord.job_id).where(
                JobRecord.status.not_in(TERMINAL_JOB_STATUSES)
            )))
        now = time.time()
        for child in sorted(self.data_dir.models.iterdir()):
            if child.is_symlink() or not child.is_dir():
                continue
            relative = self.data_dir.relative(child)
            if any(path == relative or path.startswith(relative + "/") for path in registered):
                continue
            if child.name in unfinished:
                log.info("keeping unregistered model folder %s: its job has not finished", child)
                continue
            if now - newest_mtime(child) < grace_s:
                log.info("keeping unregistered model folder %s: modified in the last %.0fs", child, grace_s)
                continue
            log.warning("removing orphan model folder %s: no registered model refers to it", child)
            try:
                trashed = self.data_dir.move_to_trash(child, f"orphan-{child.name}")
            except OSError:
                log.exception("could not move orphan model folder %s to the trash", child)
                continue
            if trashed is not None:
                remove(trashed)

    # -- conversion ---------------------------------------------------------------------------

    def _info(self, record: ModelRecord, *, full: bool = True) -> ModelInfo:
        """The model; a summary (full=False) leaves config, file digests and lineage empty."""
        return ModelInfo(
            id=record.id,
            model_id=record.model_id,
            name=record.name,
            base_model=record.base_model,
            task=record.task,
            strategy=record.strategy,
            provider=record.provider,
            created_at=as_utc(record.created_at),
            size_mb=record.size_mb,
            path=self.data_dir.absolute(record.path),
            config=dict(record.config) if full else {},
            training_params=dict(record.training_params),
            metrics=dict(record.metrics),
            job_id=record.job_id,
            adapter_type=record.adapter_type,
            file_sha256=dict(record.file_sha256) if full else {},
            status=record.status,
            lineage=dict(record.lineage) if full and record.lineage is not None else None,
        )


def _lineage_status(lineage: dict[str, Any] | None) -> str:
    if lineage is None:
        return ""
    status = lineage.get("job", {}).get("status", "")
    if status not in ("", *JOB_STATUSES):
        raise InvalidArgument(
            f"Invalid lineage job status: {status}",
            [FieldViolation("lineage.job.status", f"must be one of {', '.join(JOB_STATUSES)}")],
        )
    return str(status)
