"""modelforge: the command line for ModelForge, speaking only the gateway's public REST + WebSocket API."""
