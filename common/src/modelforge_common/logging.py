"""One logging setup for every process: JSON lines with service, request and job ids, and no secrets.

Every field of every line is redacted (the message, extra fields, the rendered traceback): the API
keys and HF token configured in the environment, and credential-shaped strings (Bearer values,
`access_token=` and other secret-named key=value pairs, `hf_...` tokens, passwords in URLs)."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

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
# Credentials that travel in URLs, headers, keyword arguments or error messages, as
# (pattern, replacement): what identifies the credential is kept, its value becomes ***.
_CREDENTIAL_PATTERNS = (
    # ?access_token=... and any other key=value / "key": "value" whose key names a secret.
    (
        re.compile(
            r"""\b((?:access|refresh|id|hf|api|auth)[_-]?token|api[_-]?keys?|password|passwd|secret|client[_-]?secret)"""
            r"""(["']?\s*[:=]\s*["']?)(?!\*\*\*)[^\s"'&,;)}\]]+""",
            re.IGNORECASE,
        ),
        rf"\g<1>\g<2>{REDACTED}",
    ),
    # Authorization: Bearer <token> (and any other "Bearer <token>").
    (re.compile(r"\b(bearer\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    # Hugging Face tokens wherever they appear.
    (re.compile(r"\b(hf_)[A-Za-z0-9]{8,}"), rf"\g<1>{REDACTED}"),
    # The password of a URL (postgresql+psycopg://user:password@host/db, nats://user:pw@host).
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(@)", re.IGNORECASE), rf"\g<1>{REDACTED}\g<2>"),
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


class Redactor:
    """Replaces known secret values and credential-shaped strings by ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _CREDENTIAL_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """`value` with every string inside it (dict values and keys, list items) redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact_value(key): self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.redact_value(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else is rendered by the formatter with str(): redact that rendering.
        return self.redact(str(value))


class RedactingFilter(logging.Filter):
    """Redacts the rendered message and the traceback text of a record (for any handler); the
    formatters below also redact every other field of the line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)
        self.secrets = self.redactor.secrets

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

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


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines in which every field is redacted: message, extra fields, and the traceback the
    formatter renders itself from the raw exception."""

    def __init__(self, *args: Any, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redactor = Redactor(secrets)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: self.redactor.redact_value(value) for key, value in log_data.items()}


class RedactingTextFormatter(logging.Formatter):
    """Plain lines, redacted as a whole (message, traceback, stack)."""

    def __init__(self, *args: Any, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redactor = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))


def configure_logging(service: str, level: str = "INFO", json_format: bool = True) -> None:
    fmt = "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s %(request_id)s %(job_id)s"
    secrets = sorted(secrets_from_environment())
    formatter: dict[str, object] = (
        {
            "()": RedactingJsonFormatter,
            "fmt": fmt,
            "rename_fields": {"levelname": "severity", "asctime": "timestamp", "name": "logger"},
            "secrets": secrets,
        }
        if json_format
        else {
            "()": RedactingTextFormatter,
            "fmt": "%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s",
            "secrets": secrets,
        }
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "context": {"()": ContextFilter, "service": service},
                "redact": {"()": RedactingFilter, "secrets": secrets},
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
