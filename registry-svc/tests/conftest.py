"""Fixtures: a database per test (SQLite file, and PostgreSQL in a fresh schema), an open registry
over a temporary data dir, model folders and JSONL content."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from modelforge_registry.app import Registry, open_registry

POSTGRES_URL = os.environ.get("MODELFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Where PostgreSQL must be there (e.g. CI=true), set MODELFORGE_REQUIRE_POSTGRES=1: an unreachable
# server then fails the tests instead of skipping them.
REQUIRE_POSTGRES = os.environ.get("MODELFORGE_REQUIRE_POSTGRES", "") == "1"

TEST_MAX_UPLOAD_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.orig}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A URL whose connections use a new, empty schema (dropped afterwards)."""
    schema = f"mf_registry_test_{secrets.token_hex(4)}"
    with postgres_admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with postgres_admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def registry(data_dir: Path, database_url: str) -> Iterator[Registry]:
    opened = open_registry(data_dir, database_url, max_upload_bytes=TEST_MAX_UPLOAD_BYTES, orphan_grace_s=0)
    yield opened
    opened.close()


@pytest.fixture
def model_folder(data_dir: Path) -> Callable[..., Path]:
    """Creates <data_dir>/models/<name> with a couple of files."""

    def create(name: str = "run1", files: dict[str, bytes] | None = None) -> Path:
        folder = data_dir / "models" / name
        for relative, content in (files or {"adapter_model.safetensors": b"weights" * 100,
                                            "sub/config.json": b"{}"}).items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(content)
        return folder

    return create


def jsonl(rows: list[object]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture
def valid_jsonl() -> bytes:
    """12 prompt/completion rows (the minimum is 10)."""
    return jsonl([{"prompt": f"What is {i} + {i}?", "completion": str(2 * i)} for i in range(12)])
