from pathlib import Path

import pytest

from modelforge_common.settings import ServiceSettings, port_of


def test_env_prefix_and_addresses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELFORGE_TRAINER_ADDR", "127.0.0.1:6001")
    settings = ServiceSettings()
    assert port_of(settings.trainer_addr) == 6001
    assert settings.resolved_data_dir() == (tmp_path / "data").resolve()
    assert settings.resolved_data_dir().is_dir()


def test_bad_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFORGE_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="log_level"):
        ServiceSettings()
