"""The schema comes only from migrations, and the migrated schema matches the ORM exactly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text

from modelforge_registry.store import Base, Database, alembic_config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def diff_against(database: Database, metadata: MetaData) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_from_empty_matches_the_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert inspect(database.engine).get_table_names() == []
        database.upgrade()
        assert set(inspect(database.engine).get_table_names()) == {
            "alembic_version",
            "models",
            "datasets",
            "sessions",
            "jobs",
        }
        assert diff_against(database, Base.metadata) == []
        # Upgrading again is a no-op.
        database.upgrade()
        with database.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
    finally:
        database.close()


def test_the_comparison_sees_drift(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        drifted = MetaData(naming_convention=Base.metadata.naming_convention)
        for table in Base.metadata.tables.values():
            table.to_metadata(drifted)
        Table("extra", drifted, Column("id", Integer, primary_key=True))
        assert [entry[0] for entry in diff_against(database, drifted)] == ["add_table"]
    finally:
        database.close()


def test_upgrading_a_populated_database_keeps_its_rows(database_url: str) -> None:
    """A registry at revision 0001 with a model in it upgrades to head; the model keeps its data and
    is marked as coming from a completed job."""
    database = Database(database_url)
    try:
        with database.engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
            connection.execute(
                text(
                    "INSERT INTO models (model_id, name, base_model, task, strategy, provider, path, size_mb, config,"
                    " training_params, metrics, job_id, adapter_type, file_sha256, created_at, state) VALUES"
                    " ('model_1', 'm', 'org/T', 'text-generation', 'sft', 'huggingface', 'models/a', 1.0, '{}', '{}',"
                    " '{}', 'train_1', 'lora', '{}', '2026-01-01 00:00:00+00:00', 'active')"
                )
            )
        database.upgrade()
        assert diff_against(database, Base.metadata) == []
        with database.engine.connect() as connection:
            row = connection.execute(text("SELECT model_id, status, lineage FROM models")).one()
        assert tuple(row) == ("model_1", "completed", None)
    finally:
        database.close()
