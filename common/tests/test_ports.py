"""ports.free_port: a port handed to one process is not handed to another while it may still bind it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from modelforge_common import ports


def test_a_port_the_kernel_gives_twice_is_handed_out_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offered = iter([40001, 40001, 40002])
    monkeypatch.setattr(ports, "_kernel_free_port", lambda: next(offered))
    assert ports.free_port(tmp_path) == 40001
    # Another process (another pytest worker) asks while the first has not bound it yet.
    assert ports.free_port(tmp_path) == 40002
    assert sorted(p.name for p in tmp_path.iterdir()) == ["40001", "40002"]


def test_a_stale_claim_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    claim = tmp_path / "40003"
    claim.touch()
    old = time.time() - ports.CLAIM_S - 5
    os.utime(claim, (old, old))
    monkeypatch.setattr(ports, "_kernel_free_port", lambda: 40003)
    assert ports.free_port(tmp_path) == 40003
    assert claim.stat().st_mtime > old + ports.CLAIM_S


def test_when_every_offer_is_claimed_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "40004").touch()
    monkeypatch.setattr(ports, "_kernel_free_port", lambda: 40004)
    with pytest.raises(RuntimeError, match="no unclaimed free loopback port"):
        ports.free_port(tmp_path)


def test_the_port_is_free_to_bind(tmp_path: Path) -> None:
    port = ports.free_port(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
