"""Settings of registry-svc (environment variables with the MODELFORGE_ prefix)."""

from __future__ import annotations

from pydantic import Field, model_validator

from modelforge_common.settings import ServiceSettings

MIB = 1024 * 1024


class RegistrySettings(ServiceSettings):
    # MODELFORGE_DATABASE_URL, e.g. postgresql+psycopg://user@host:5432/modelforge;
    # empty means sqlite:///<data_dir>/registry.db.
    database_url: str = ""
    max_upload_bytes: int = Field(default=512 * MIB, gt=0)
    # Unregistered folders under <data_dir>/models and unfinished uploads younger than this are
    # kept by the startup sweep: a trainer or another replica may still be writing them.
    orphan_grace_s: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _default_database_url(self) -> RegistrySettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir.expanduser().resolve() / 'registry.db'}"
        return self
