"""Free loopback ports that no other process of this machine was handed a moment ago.

Binding port 0 and closing the socket gives a port nothing listens on *now*; the caller binds it
later (a service it starts, a URL meant to refuse connections). Between the two, another process
asking the kernel the same way can be given the same port: with `make test`'s two pytest workers each
starting stacks of six listeners, that happened (a stack found its gateway's port taken). So each
port handed out is also claimed, as a file created exclusively in a folder every process of the
machine shares; a port claimed less than CLAIM_S ago is not handed out again. Only the window
between choosing and binding needs the claim: a port in use is never given by the kernel anyway.
Imports nothing but the standard library (the training runtime uses it too).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

# Longer than any caller takes from choosing a port to binding it (a stack starting on a busy machine).
CLAIM_S = 600.0
CLAIMS_DIR = Path(tempfile.gettempdir()) / f"modelforge-port-claims-{os.getuid()}"
ATTEMPTS = 200


def _kernel_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _claim(port: int, claims_dir: Path, now: float) -> bool:
    claim = claims_dir / str(port)
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        pass
    try:
        if now - claim.stat().st_mtime <= CLAIM_S:
            return False
        # A stale claim: take it over by renewing its time (two takers may both renew: the same
        # odds as without claims, and only for a port unused for CLAIM_S).
        os.utime(claim, (now, now))
        return True
    except FileNotFoundError:
        return False


def free_port(claims_dir: Path = CLAIMS_DIR) -> int:
    """A loopback TCP port that nothing listens on and no process here was handed in the last CLAIM_S."""
    claims_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(ATTEMPTS):
        port = _kernel_free_port()
        if _claim(port, claims_dir, time.time()):
            return port
    raise RuntimeError(f"no unclaimed free loopback port after {ATTEMPTS} tries (claims in {claims_dir})")
