"""`python -m modelforge_gateway`: settings -> logging -> app -> uvicorn on bind_host:gateway_port."""

from __future__ import annotations

import gc

import uvicorn

from modelforge_common.logging import configure_logging
from modelforge_common.tracing import configure_tracing
from modelforge_gateway.main import create_app
from modelforge_gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    configure_tracing("gateway")  # on only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = create_app(settings)
    # What the imports and the app made lives as long as the process: out of the cyclic collector's
    # full passes (gc.freeze), which otherwise walk all of it, 20 to 40 ms with the event loop stopped,
    # every request in flight waiting (bench/ANALYSIS.md, Serving).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.bind_host,
        port=settings.gateway_port,
        log_config=None,  # keep configure_logging's handlers (JSON lines with request ids)
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        timeout_keep_alive=settings.keep_alive_s,
        proxy_headers=True,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
