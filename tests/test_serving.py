"""resattn_app.serving: the health wait that the browser, packaging and load tests share."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from resattn_app.serving import ServerNotHealthy, free_port, is_healthy, wait_until_healthy


class _Health(BaseHTTPRequestHandler):
    ready_at = 0.0  # monotonic time from which the route answers "ok"

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/_stcore/health" and time.monotonic() >= self.ready_at:
            body, status = b"ok", 200
        else:
            body, status = b"not yet", 503
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def late_server():
    """A server whose health route turns "ok" 1 s after it starts listening (503 before)."""
    handler = type("Late", (_Health,), {"ready_at": time.monotonic() + 1.0})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_waits_until_the_route_answers_ok(late_server):
    assert not is_healthy(late_server)  # 503 is not healthy
    start = time.monotonic()
    wait_until_healthy(late_server, timeout=10, poll=0.05)
    assert 0.5 < time.monotonic() - start < 10
    assert is_healthy(late_server)


def test_nothing_listening_times_out():
    url = f"http://127.0.0.1:{free_port()}"
    assert not is_healthy(url)
    with pytest.raises(ServerNotHealthy, match="no healthy server"):
        wait_until_healthy(url, timeout=0.5, poll=0.05)


def test_an_exited_server_fails_at_once_with_its_code():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    start = time.monotonic()
    with pytest.raises(ServerNotHealthy, match="exited with code 3"):
        wait_until_healthy(f"http://127.0.0.1:{free_port()}", process, timeout=60)
    assert time.monotonic() - start < 5  # not the 60 s timeout
