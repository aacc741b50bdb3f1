"""Waiting for a served app: the one helper that the browser tests, the packaging test and the
load test (scripts/load_test.py) use to pick a port and to know when Streamlit is ready.

Streamlit answers `GET /_stcore/health` with `ok` once its server accepts sessions; before that
the port refuses connections or the route is missing. Standard library only, like the launcher.
"""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

HEALTH_ROUTE = "/_stcore/health"


class ServerNotHealthy(RuntimeError):
    """The server exited, or did not answer its health check in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}{HEALTH_ROUTE}", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 120,
                       poll: float = 0.5) -> None:
    """Return once `url` answers its health check; raise ServerNotHealthy as soon as `process`
    (the server, when we started it) exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not is_healthy(url):
        if process is not None and process.poll() is not None:
            raise ServerNotHealthy(f"the server at {url} exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise ServerNotHealthy(f"no healthy server at {url} after {timeout:.0f} s")
        time.sleep(poll)
