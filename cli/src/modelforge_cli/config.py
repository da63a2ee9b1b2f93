"""Where the gateway is and how to talk to it, plus the YAML run file `train --config` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0


class ConfigError(Exception):
    """A local input problem (bad run file, bad URL): a usage error, exit 2."""


@dataclass(frozen=True)
class CliConfig:
    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--url must be an http(s) URL such as {DEFAULT_URL}, got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ws_url(self, path: str) -> str:
        """The WebSocket URL of `path` on the same host: http -> ws, https -> wss."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + path, "", ""))


def load_run_file(path: Path) -> dict[str, Any]:
    """Reads a run file: a YAML mapping whose keys are start_training body fields."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(key, str) for key in loaded):
        raise ConfigError(f"{path} must hold a mapping of start_training fields (task: ..., model_name: ...)")
    return loaded
