"""Health: /healthz names the dependency that is down, and worker_health answers for a real worker."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.services import REPO_ROOT, free_port, subprocess_env
from tests.ops.conftest import sample_values, value

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


# ---------------------------------------------------------------- /healthz

def test_healthz_is_ok_when_database_and_redis_answer(client, require_redis):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_503_naming_redis_when_redis_is_down(client, settings, require_redis):
    settings.REDIS_URL = dead_redis_url()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith("unhealthy: redis: unreachable")
    assert "127.0.0.1" not in response.content.decode()


@pytest.fixture
def uvicorn_on_dead_database(require_postgres, require_redis, tmp_path):
    """A real ASGI server whose DATABASE_URL points at a port where nothing listens."""
    port = free_port()
    env = subprocess_env(DATABASE_URL=f"postgres://arena:db-password-7x@127.0.0.1:{free_port()}/arena",
                         ALLOWED_HOSTS="127.0.0.1")
    log_path = tmp_path / "uvicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "arena.asgi:application", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"uvicorn did not start:\n{log_path.read_text()[-3000:]}") from None
            time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_healthz_is_503_naming_the_database_when_it_is_unreachable(uvicorn_on_dead_database):
    response = httpx.get(f"{uvicorn_on_dead_database}/healthz", timeout=15)
    assert response.status_code == 503
    body = response.text
    assert body.startswith("unhealthy: database: unreachable (OperationalError)"), body
    assert "redis" not in body  # Redis answers: only the database is named
    assert "db-password-7x" not in body and "postgres://" not in body


# ---------------------------------------------------------------- the worker

@pytest.fixture
def metrics_worker(monkeypatch, request):
    """The real celery_worker_process fixture, started with its metrics endpoint on a free port."""
    port = free_port()
    monkeypatch.setenv("WORKER_METRICS_PORT", str(port))
    monkeypatch.setenv("WORKER_METRICS_ADDR", "127.0.0.1")
    request.getfixturevalue("celery_worker_process")
    return f"http://127.0.0.1:{port}/metrics"


def worker_log() -> str:
    path = Path(os.environ.get("TEST_LOG_DIR", "/tmp")) / f"celery-worker-{os.getpid()}.log"
    return path.read_text() if path.exists() else ""


def worker_node() -> str:
    return f"test-{os.getpid()}@{socket.gethostname()}"


def test_worker_health_answers_for_a_running_worker(metrics_worker):
    env = subprocess_env()
    result = manage("worker_health", "--timeout", "10", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{worker_node()}: pong" in result.stdout
    named = manage("worker_health", "--node", worker_node(), "--timeout", "10", env=env)
    assert named.returncode == 0, named.stderr
    other = manage("worker_health", "--node", "celery@no-such-host", "--timeout", "2", env=env)
    assert other.returncode == 1
    assert "No answer from celery@no-such-host within 2 s" in other.stderr


def test_worker_health_fails_plainly_without_a_worker_or_a_broker(require_redis, require_postgres):
    no_worker = manage("worker_health", "--timeout", "1", env=subprocess_env())
    assert no_worker.returncode == 1
    assert "No answer from any worker within 1 s" in no_worker.stderr
    no_broker = manage("worker_health", "--timeout", "2", env=subprocess_env(REDIS_URL=dead_redis_url()))
    assert no_broker.returncode == 1
    assert "The broker (Redis at REDIS_URL) is unreachable (ConnectionError)" in no_broker.stderr
    embedded = {k: v for k, v in subprocess_env().items() if k not in ("REDIS_URL", "DATABASE_URL")}
    embedded["SQLITE_PATH"] = str(Path(os.environ.get("TEST_LOG_DIR", "/tmp")) / "worker-health-embedded.sqlite3")
    no_redis = manage("worker_health", env=embedded)
    assert no_redis.returncode == 1
    assert "REDIS_URL is not set" in no_redis.stderr


def test_worker_serves_generation_metrics_on_its_own_port(metrics_worker, make_contender, rater_user):
    from arena.models import Generation, GenerationStatus
    from arena.services.battles import battle_start, turn_submit

    contenders = [make_contender("test-quick-1b", "tgi"), make_contender("test-quick-1b", "ollama")]
    before = sample_values(httpx.get(metrics_worker, timeout=10).text)
    battle = battle_start(rater=rater_user)
    turn_submit(battle=battle, rater=rater_user, prompt="Say something short.")  # enqueued on the broker
    deadline = time.monotonic() + 60
    while Generation.objects.filter(turn__battle=battle).exclude(status=GenerationStatus.DONE).exists():
        assert time.monotonic() < deadline, (list(Generation.objects.values_list("status", "error_code")),
                                             worker_log()[-4000:])
        time.sleep(0.2)
    after = sample_values(httpx.get(metrics_worker, timeout=10).text)
    for contender in contenders:
        server = contender.server.name
        assert value(before, "arena_generations_total", server=server) == 0
        assert value(after, "arena_generations_total", server=server, outcome="done") == 1
        assert value(after, "arena_time_to_first_token_seconds_count", server=server) == 1
