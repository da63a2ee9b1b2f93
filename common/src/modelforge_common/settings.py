"""Base settings shared by every service; each service subclasses it with its own fields.

All variables use the MODELFORGE_ prefix so one environment (``make up``, a k8s ConfigMap)
configures the whole stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {
    "gateway": 8000,
    "trainer": 50051,
    "registry": 50052,
    "hardware": 50053,
    "inference": 50054,
}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFORGE_", extra="ignore")

    data_dir: Path = Path(".modelforge")
    nats_url: str = "nats://127.0.0.1:4222"
    # Interface the gRPC/HTTP servers bind; k8s sets 0.0.0.0.
    bind_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    grpc_reflection: bool = True
    shutdown_grace_s: float = 10.0
    grpc_max_message_bytes: int = 64 * 1024 * 1024

    # Where each service listens (its own) or is reached (the others).
    trainer_addr: str = f"127.0.0.1:{DEFAULT_PORTS['trainer']}"
    registry_addr: str = f"127.0.0.1:{DEFAULT_PORTS['registry']}"
    hardware_addr: str = f"127.0.0.1:{DEFAULT_PORTS['hardware']}"
    inference_addr: str = f"127.0.0.1:{DEFAULT_PORTS['inference']}"

    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path


def port_of(addr: str) -> int:
    """Port part of a host:port address (the port a service binds for its own address)."""
    return int(addr.rsplit(":", 1)[1])
