"""No secret reaches a log line: not in the message, an extra field, or a traceback the formatter renders."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from modelforge_common.logging import (
    RedactingJsonFormatter,
    RedactingTextFormatter,
    Redactor,
    configure_logging,
)

API_KEY = "mf-alice-0123456789abcdef"
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrSt"
DB_PASSWORD = "s3cr3t-pw"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.signature"
QUERY_KEY = "qk-9876543210"


def leaky_lines(logger: logging.Logger) -> None:
    """Logs every way a secret has leaked: message, args, extra fields, a traceback, a stack."""
    logger.warning("calling with key %s", API_KEY, extra={"url": f"/ws/training?access_token={QUERY_KEY}&job=1"})
    logger.info("db", extra={"database_url": f"postgresql+psycopg://modelforge:{DB_PASSWORD}@db:5432/mf",
                             "headers": {"authorization": f"Bearer {BEARER}"}, "tokens": [HF_TOKEN]})
    try:
        raise ValueError(f"request field held {HF_TOKEN} and Authorization: Bearer {BEARER}")
    except ValueError:
        logger.exception("upload failed for key=%s", API_KEY)
    logger.error("where", stack_info=True, extra={"secret_value": f"password={DB_PASSWORD}"})


def assert_clean(text: str) -> None:
    for secret in (API_KEY, HF_TOKEN, DB_PASSWORD, BEARER, QUERY_KEY):
        assert secret not in text
    assert "***" in text


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    test_logger = logging.getLogger("modelforge_test.redaction")
    test_logger.addHandler(handler)
    test_logger.setLevel(logging.DEBUG)
    test_logger.propagate = False
    yield test_logger, stream
    test_logger.removeHandler(handler)


def test_json_lines_redact_every_field_and_the_traceback(logger: tuple[logging.Logger, io.StringIO]) -> None:
    test_logger, stream = logger
    test_logger.handlers[0].setFormatter(RedactingJsonFormatter("%(message)s", secrets=[API_KEY]))
    leaky_lines(test_logger)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4
    assert_clean(stream.getvalue())
    assert lines[0]["url"] == "/ws/training?access_token=***&job=1"
    assert lines[1]["database_url"] == "postgresql+psycopg://modelforge:***@db:5432/mf"
    assert lines[1]["headers"] == {"authorization": "Bearer ***"}
    assert "ValueError: request field held hf_*** and Authorization: Bearer ***" in lines[2]["exc_info"]
    assert lines[2]["message"] == "upload failed for key=***"


def test_text_lines_are_redacted_too(logger: tuple[logging.Logger, io.StringIO]) -> None:
    test_logger, stream = logger
    test_logger.handlers[0].setFormatter(RedactingTextFormatter("%(message)s %(url)s", secrets=[API_KEY]))
    test_logger.warning("key %s", API_KEY, extra={"url": f"?access_token={QUERY_KEY}"})
    try:
        raise RuntimeError(HF_TOKEN)
    except RuntimeError:
        test_logger.exception("failed", extra={"url": ""})
    assert_clean(stream.getvalue())


def test_configure_logging_redacts_with_the_environment_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELFORGE_API_KEYS", f"alice:{API_KEY},ci:another-key-42")
    monkeypatch.setenv("MODELFORGE_HF_TOKEN", "plainvalue-token-xyz")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("test-svc", "INFO", json_format=True)
        leaky_lines(logging.getLogger("modelforge_test.configured"))
        logging.getLogger("x").info("ci uses another-key-42; hub plainvalue-token-xyz")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    err = capsys.readouterr().err
    assert_clean(err)
    assert "another-key-42" not in err and "plainvalue-token-xyz" not in err
    assert all(json.loads(line)["service"] == "test-svc" for line in err.splitlines())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_tokens=5 learning_rate=0.1", "max_tokens=5 learning_rate=0.1"),
        ("sqlite:////data/registry.db", "sqlite:////data/registry.db"),
        ("http://127.0.0.1:8000/api/jobs", "http://127.0.0.1:8000/api/jobs"),
        ("nats://user:pw123@nats:4222", "nats://user:***@nats:4222"),
        ('{"api_key": "abc", "password":"x y"}', '{"api_key": "***", "password":"*** y"}'),
    ],
)
def test_ordinary_text_is_kept(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected
