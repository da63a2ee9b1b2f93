"""Wiring: open the store (migrating it), recover from an interrupted run, build the gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_common.grpc_server import build_server, service_name
from modelforge_common.metrics import gauge_callback
from modelforge_registry.datasets import DatasetStore
from modelforge_registry.files import DataDir
from modelforge_registry.jobs import JobStore
from modelforge_registry.models import ModelCatalog
from modelforge_registry.servicer import RegistryServicer
from modelforge_registry.sessions import SessionStore
from modelforge_registry.store import Database

log = logging.getLogger(__name__)

SERVICE_NAME = service_name(registry_pb2, "RegistryService")


@dataclass
class Registry:
    database: Database
    data_dir: DataDir
    models: ModelCatalog
    datasets: DatasetStore
    sessions: SessionStore
    jobs: JobStore

    def close(self) -> None:
        self.database.close()


def open_registry(
    data_dir: Path, database_url: str, *, max_upload_bytes: int, orphan_grace_s: float
) -> Registry:
    """Upgrades the schema to the newest migration, then finishes whatever a crash left half done."""
    database = Database(database_url)
    database.upgrade()
    files = DataDir(data_dir)
    registry = Registry(
        database=database,
        data_dir=files,
        models=ModelCatalog(database, files),
        datasets=DatasetStore(database, files, max_upload_bytes),
        sessions=SessionStore(database),
        jobs=JobStore(database),
    )
    registry.models.recover(orphan_grace_s)
    registry.datasets.recover(orphan_grace_s)
    register_metrics(registry)
    log.info("registry open: data dir %s, database %s", files.root, database.engine.url.render_as_string())
    return registry


def register_metrics(registry: Registry) -> None:
    """Gauges read from the database at each scrape of /metrics (the newest registry opened wins)."""
    gauge_callback("modelforge_registry_models", "Registered models", registry.models.count)
    gauge_callback("modelforge_registry_datasets", "Uploaded datasets", registry.datasets.count)


def build_registry_server(
    registry: Registry, bind: str, *, reflection_enabled: bool = True, max_message_bytes: int = 64 * 1024 * 1024
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    servicer = RegistryServicer(registry.models, registry.datasets, registry.sessions, registry.jobs)
    return build_server(
        [(registry_pb2_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)],
        bind,
        reflection_enabled=reflection_enabled,
        max_message_bytes=max_message_bytes,
    )
