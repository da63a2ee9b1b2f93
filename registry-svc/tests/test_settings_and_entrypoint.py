"""Settings defaults and the `python -m modelforge_registry migrate` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from modelforge_registry.settings import RegistrySettings


def test_database_url_defaults_to_sqlite_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODELFORGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("MODELFORGE_DATA_DIR", str(tmp_path / "data"))
    settings = RegistrySettings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'registry.db'}"
    assert settings.max_upload_bytes == 512 * 1024 * 1024


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFORGE_DATABASE_URL", "postgresql+psycopg://u@db:5432/modelforge")
    monkeypatch.setenv("MODELFORGE_MAX_UPLOAD_BYTES", "1024")
    settings = RegistrySettings()
    assert (settings.database_url, settings.max_upload_bytes) == ("postgresql+psycopg://u@db:5432/modelforge", 1024)


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "MODELFORGE_DATA_DIR": str(data_dir), "MODELFORGE_LOG_JSON": "false"}
    env.pop("MODELFORGE_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "modelforge_registry", "migrate"], env=env, check=True, timeout=60)
    engine = create_engine(f"sqlite:///{data_dir / 'registry.db'}")
    try:
        assert {"models", "datasets", "sessions", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
