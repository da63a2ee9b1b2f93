"""python -m modelforge_trainer: settings -> logging -> build -> serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from modelforge_common.grpc_server import serve
from modelforge_common.logging import configure_logging
from modelforge_trainer.app import SERVICE_NAME, build_app
from modelforge_trainer.settings import TrainerSettings

log = logging.getLogger("modelforge_trainer")


async def run(settings: TrainerSettings) -> None:
    app = build_app(settings)
    app.start_background()
    log.info("trainer-svc listening on port %d (data dir %s)", app.port, settings.resolved_data_dir())
    await serve(app.server, app.health, [SERVICE_NAME], settings.shutdown_grace_s, cleanup=[app.cleanup])


def main() -> None:
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
