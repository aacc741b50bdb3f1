"""deploy/: nginx in front of the replicas serves Streamlit's frontend itself, as a browser
needs it (ES modules refuse a text/plain type), compressed and cacheable, and gives every new
browser the route cookie that keeps its session on one replica. Runs the real nginx on the
real deploy/nginx.conf (only the port changed) and deploy/serve.sh's preparation step; the
replicas themselves are not started (their upstream answers 502, which is enough for the cookie)."""
from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from resattn_app.serving import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@pytest.fixture
def proxy(tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    run = tmp_path / "run"
    env = {**os.environ, "RESATTN_RUN_DIR": str(run), "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "deploy" / "serve.sh"), "--prepare"], env=env, check=True, timeout=120)
    port = free_port()
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "listen 8600;" in config and "server 127.0.0.1:8601;" in config
    config = config.replace("listen 8600;", f"listen 127.0.0.1:{port};")
    for replica in (8601, 8602):  # ports where nothing listens, whatever runs on this machine
        config = config.replace(f"server 127.0.0.1:{replica};", f"server 127.0.0.1:{free_port()};")
    if os.geteuid() == 0:  # root's workers would run as nobody, who cannot enter pytest's 0700 tmp
        config = "user root;\n" + config
    (tmp_path / "nginx.conf").write_text(config)
    process = subprocess.Popen([NGINX, "-p", str(run), "-c", str(tmp_path / "nginx.conf")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"nginx did not start: {process.stdout.read().decode(errors='replace')}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", run / "static"
    finally:
        process.terminate()
        process.wait(timeout=10)


def get(url: str, gzip_ok: bool = False):
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_nginx_sends_the_frontend_typed_compressed_and_cacheable(proxy):
    url, static = proxy
    script = next((static / "js").glob("*.js"))
    status, headers, body = get(f"{url}/static/js/{script.name}", gzip_ok=True)
    assert status == 200
    assert headers["Content-Type"] == "application/javascript"  # else the browser refuses the module
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == script.read_bytes()
    assert "immutable" in headers.get_all("Cache-Control")[-1]
    status, headers, body = get(f"{url}/static/js/{script.name}")  # a client without gzip
    assert status == 200 and "Content-Encoding" not in headers and body == script.read_bytes()
    for folder, suffix, kind in (("css", "css", "text/css"), ("media", "woff2", "font/woff2")):
        found = next((static / folder).glob(f"*.{suffix}"))
        status, headers, _ = get(f"{url}/static/{folder}/{found.name}")
        assert (status, headers["Content-Type"]) == (200, kind), found.name


def test_a_new_browser_gets_a_route_cookie_even_when_no_replica_answers(proxy):
    url, _ = proxy
    status, headers, _ = get(f"{url}/")
    assert status == 502  # the replicas are not running in this test
    cookies = [c for c in headers.get_all("Set-Cookie") or [] if c.startswith("resattn_route=")]
    assert len(cookies) == 1 and len(cookies[0].split(";")[0]) > len("resattn_route=") + 8
