"""Helpers for the fault tests: real worker and ASGI processes we start, kill and restart ourselves."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client

from arena.models import ArenaModel, BackendServer, HealthStatus
from arena.roles import RATER
from tests.fixtures.services import REPO_ROOT, free_port, subprocess_env

LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", "/tmp"))


class Process:
    """A child process with its own log file, stopped (or killed) by its own pid only."""

    def __init__(self, argv: list[str], *, env: dict[str, str], name: str) -> None:
        self.log_path = LOG_DIR / f"faults-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log_path} exited early:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{needle!r} not in {self.log_path} after {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(env: dict[str, str], name: str = "worker") -> Process:
    worker = Process([sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "threads",
                      "--concurrency", "8", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                      "--without-heartbeat", "-n", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
                      "-Q", "celery,ratings"],
                     env=env, name=name)
    try:
        worker.wait_for_log("ready.")
    except Exception:
        worker.stop()
        raise
    return worker


def start_web(env: dict[str, str]) -> tuple[Process, str]:
    import httpx

    port = free_port()
    env = {**env, "ALLOWED_HOSTS": "127.0.0.1,localhost", "SESSION_COOKIE_SECURE": "false",
           "CSRF_COOKIE_SECURE": "false"}
    web = Process([sys.executable, "-m", "uvicorn", "arena.asgi:application", "--host", "127.0.0.1", "--port",
                   str(port), "--ws", "websockets"], env=env, name="web")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if web.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{web.log()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return web, base
        except httpx.HTTPError:
            time.sleep(0.2)
    web.stop()
    raise RuntimeError(f"uvicorn did not start:\n{web.log()[-3000:]}")


@pytest.fixture
def worker_env(require_postgres, require_redis, transactional_db):
    return subprocess_env()


@pytest.fixture
def rater(django_user_model):
    user = django_user_model.objects.create_user("rater-faults", password="pw-rater-123")
    user.groups.add(Group.objects.get_or_create(name=RATER)[0])
    return user


@pytest.fixture
def contender_on(emulator, preset):
    """``make(model, kind, **server_fields)``: an emulated contender on a server we tune per test."""

    def make(model: str, kind: str = "ollama", **server_fields) -> ArenaModel:
        fields = {"stall_timeout_s": 5.0, "deadline_s": 30.0, **server_fields}
        server = BackendServer.objects.create(
            name=f"faults-{kind}-{model}-{BackendServer.objects.count()}", kind=kind,
            base_url=emulator.url_for(kind, model), health_status=HealthStatus.UP, **fields)
        return ArenaModel.objects.create(display_name=f"{model} ({kind}) #{server.pk}", server=server,
                                         backend_model_id="tgi" if kind == "tgi" else model, preset=preset,
                                         enabled=True)

    return make


# ---------------------------------------------------------------- the rater's side of the battle WebSocket

def consumer_for(user) -> WebsocketCommunicator:
    from arena.consumers import BattleConsumer

    communicator = WebsocketCommunicator(BattleConsumer.as_asgi(), "/ws/battle/")
    communicator.scope["user"] = user
    return communicator


async def frames_until(communicator, done, timeout: float = 30.0) -> list[dict]:
    """Frames until ``done(frames)`` is true; fails with what arrived if it never is."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up waiting; frames so far: {frames}")
        try:
            frames.append(await communicator.receive_json_from(timeout=left))
        except asyncio.TimeoutError:
            raise AssertionError(f"gave up waiting; frames so far: {frames}") from None
    return frames


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class BrowserSocket:
    """A real WebSocket to a running ASGI server, as a logged-in browser opens it."""

    def __init__(self, base: str, cookie: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(base.replace("http://", "ws://") + "/ws/battle/", open_timeout=10,
                          additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
                                              "Origin": base}).__enter__()  # closed by close()

    def send(self, frame: dict) -> None:
        self.ws.send(json.dumps(frame))

    def until(self, done, timeout: float = 30.0) -> list[dict]:
        frames: list[dict] = []
        deadline = time.monotonic() + timeout
        while not done(frames):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"gave up waiting; frames so far: {frames}")
            try:
                frames.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                raise AssertionError(f"gave up waiting; frames so far: {frames}") from None
        return frames

    def close(self) -> None:
        self.ws.close()


def last_is(*kinds: str):
    return lambda frames: bool(frames) and frames[-1]["type"] in kinds
