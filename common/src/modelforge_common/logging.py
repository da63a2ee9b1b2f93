"""One logging setup for every process: JSON lines with service, request and job ids."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os
import re
from collections.abc import Iterable, Mapping

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")


class ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id_var.get()
        record.job_id = getattr(record, "job_id", "") or job_id_var.get()
        return True


# Environment variables whose values are secrets: they must never reach a log line.
SECRET_ENV_VARS = ("MODELFORGE_HF_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELFORGE_API_KEYS")
REDACTED = "***"
# Credentials that travel in URLs or headers and may be echoed by an access log or an error message.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(access_token=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(authorization:?\s*bearer\s+)[^\s\"',]+", re.IGNORECASE),
    re.compile(r"\b(hf_)[A-Za-z0-9]{8,}"),
)


def secrets_from_environment(env: Mapping[str, str] | None = None) -> set[str]:
    """The secret values configured in the environment (API keys without their names)."""
    env = os.environ if env is None else env
    found: set[str] = set()
    for name in SECRET_ENV_VARS:
        value = env.get(name, "")
        if name == "MODELFORGE_API_KEYS":
            found.update(item.partition(":")[2] or item for item in (p.strip() for p in value.split(",")) if item)
        elif value.strip():
            found.add(value.strip())
    # Very short values would blank out ordinary words; keys are long.
    return {secret for secret in found if len(secret) >= 4}


class RedactingFilter(logging.Filter):
    """Replaces known secrets and credential-shaped strings in the rendered message by ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as is
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(service: str, level: str = "INFO", json_format: bool = True) -> None:
    fmt = "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s %(request_id)s %(job_id)s"
    formatter: dict[str, object] = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": fmt,
            "rename_fields": {"levelname": "severity", "asctime": "timestamp", "name": "logger"},
        }
        if json_format
        else {"format": "%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "context": {"()": ContextFilter, "service": service},
                "redact": {"()": RedactingFilter, "secrets": sorted(secrets_from_environment())},
            },
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "filters": ["context", "redact"],
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
        }
    )
