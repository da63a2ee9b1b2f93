"""`python -m modelforge_registry` serves RegistryService; `python -m modelforge_registry migrate`
only upgrades the database schema to the newest migration (e.g. a k8s init container)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from modelforge_common.grpc_server import serve
from modelforge_common.logging import configure_logging
from modelforge_common.settings import port_of
from modelforge_registry.app import SERVICE_NAME, Registry, build_registry_server, open_registry
from modelforge_registry.settings import RegistrySettings
from modelforge_registry.store import Database

log = logging.getLogger("modelforge_registry")


async def _serve(settings: RegistrySettings, registry: Registry) -> None:
    bind = f"{settings.bind_host}:{port_of(settings.registry_addr)}"
    server, port, health = build_registry_server(
        registry,
        bind,
        reflection_enabled=settings.grpc_reflection,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    log.info("registry-svc listening on %s:%d", settings.bind_host, port)

    async def close_registry() -> None:
        registry.close()

    await serve(server, health, [SERVICE_NAME], settings.shutdown_grace_s, cleanup=[close_registry])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelforge_registry", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)

    settings = RegistrySettings()
    configure_logging("registry", settings.log_level, settings.log_json)
    data_dir = settings.resolved_data_dir()  # also where the default SQLite file lives
    if args.command == "migrate":
        database = Database(settings.database_url)
        try:
            database.upgrade()
        finally:
            database.close()
        return
    registry = open_registry(
        data_dir,
        settings.database_url,
        max_upload_bytes=settings.max_upload_bytes,
        orphan_grace_s=settings.orphan_grace_s,
    )
    asyncio.run(_serve(settings, registry))


if __name__ == "__main__":
    main()
