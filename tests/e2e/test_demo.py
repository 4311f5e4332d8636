"""`make demo` end to end: the demo command serves the site, and an admin sees healthy demo contenders."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.fixtures.services import REPO_ROOT, free_port


@pytest.fixture
def demo_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    env.update({"SQLITE_PATH": str(tmp_path / "demo.sqlite3"), "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
                "PYTHONUNBUFFERED": "1"})
    log_path = tmp_path / "demo.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port)], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("demo did not start:\n" + log_path.read_text())
    yield base, log_path
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("demo did not stop on Ctrl-C")
    log.close()


def test_demo_serves_admin_with_healthy_demo_contenders(demo_server, page):
    base, log_path = demo_server
    output = log_path.read_text()
    assert "admin / admin-demo" in output and "rater / rater-demo" in output and "viewer / viewer-demo" in output
    assert "servers up: 3" in output

    page.goto(f"{base}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-demo")
    page.click("input[type=submit]")
    page.goto(f"{base}/admin/arena/backendserver/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    for i in range(3):
        assert "Up" in rows.nth(i).inner_text()
    page.goto(f"{base}/admin/arena/arenamodel/")
    listing = page.locator("#result_list").inner_text()
    assert "demo-" in listing
    # The admin stylesheet is served by the ASGI app itself in the embedded default.
    assert httpx.get(f"{base}/static/admin/css/base.css").status_code == 200


def test_demo_stops_on_ctrl_c(demo_server):
    base, _ = demo_server
    # The fixture's teardown sends SIGINT and fails if the process does not exit; here we check the port closes.
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
