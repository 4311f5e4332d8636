"""Fixtures for the security tests: one user per role, a small leaderboard, a backend we control."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client

from arena.models import ArenaModel, BackendServer, DecodingPreset, HealthStatus
from arena.roles import RATER, VIEWER

ROLES = ("anonymous", "rater", "viewer", "admin")

# A distinctive secret: any page, export, log line or frame that contains it leaks the token.
SECRET_TOKEN = "sk-canary-5e1f0a9d7b2c4e83-DO-NOT-LEAK"


def make_user(django_user_model, role: str, suffix: str = ""):
    if role == "anonymous":
        return None
    name = f"sec-{role}{suffix}"
    if role == "admin":
        return django_user_model.objects.create_superuser(name, f"{name}@example.com", password=None)
    user = django_user_model.objects.create_user(name, password=None)
    user.groups.add(Group.objects.get_or_create(name={"rater": RATER, "viewer": VIEWER}[role])[0])
    return user


@pytest.fixture
def role_users(django_user_model):
    """{role: user or None}: anonymous, a rater, a viewer (PM), a staff superuser."""
    return {role: make_user(django_user_model, role) for role in ROLES}


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def session_cookie(user) -> str:
    return client_for(user).cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def in_process_generation(settings):
    """Generation tasks run in this process's thread pool (same task code); drained at teardown."""
    from workers import dispatch

    settings.GENERATION_IN_PROCESS = True
    yield
    if dispatch._executor is not None:
        dispatch._executor.shutdown(wait=True)
        dispatch._executor = None


# ---------------------------------------------------------------- a backend whose every byte we choose

class _ScriptedBackend(BaseHTTPRequestHandler):
    """An OpenAI-compatible server: ``/v1/models`` and streamed ``/v1/chat/completions``.

    The answer depends on the requested model id (see ``ScriptedBackend.answers``):
    * a string: streamed as chunks, then ``[DONE]``;
    * ``("status", code)``: an error response whose body echoes the Authorization header back,
      as a badly behaved proxy might;
    * ``("midstream", text)``: some text, then an error event echoing the Authorization header.
    """

    server_version = "scripted/1"

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def _json(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.requests.append((self.headers.get("Authorization", ""), {"GET": self.path}))
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": name, "object": "model"}
                                                        for name in self.server.answers]})
        else:  # any other route: an error that echoes the credentials back
            self._json(500, {"error": {"message": f"no route; you sent '{self.headers.get('Authorization', '')}'"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((auth, request))
        answer = self.server.answers.get(request.get("model"))
        if answer is None:
            self._json(404, {"error": {"message": f"no model {request.get('model')!r}"}})
            return
        if isinstance(answer, tuple) and answer[0] == "status":
            self._json(answer[1], {"error": {"message": f"upstream refused the header '{auth}'",
                                             "type": "server_error"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        text = answer[1] if isinstance(answer, tuple) else answer

        def event(payload) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        pieces = [text[i:i + 7] for i in range(0, len(text), 7)] or [""]
        for piece in pieces:
            event({"id": "c1", "object": "chat.completion.chunk", "model": request.get("model"),
                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if isinstance(answer, tuple) and answer[0] == "midstream":
            event({"error": {"message": f"worker crashed while holding '{auth}'", "type": "server_error"}})
            return
        event({"id": "c1", "object": "chat.completion.chunk", "model": request.get("model"),
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        event({"id": "c1", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class ScriptedBackend:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedBackend)
        self.httpd.daemon_threads = True
        self.httpd.answers = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def answers(self) -> dict:
        return self.httpd.answers

    @property
    def requests(self) -> list:
        return self.httpd.requests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> ScriptedBackend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def scripted_backend():
    backend = ScriptedBackend().start()
    yield backend
    backend.stop()


@pytest.fixture
def scripted_contender(db, scripted_backend):
    """Register a contender on the scripted backend: ``make(model_id, answer, token=..., **fields)``."""
    scripted_backend.requests.clear()
    preset = DecodingPreset.objects.create(name="sec-preset", temperature=0.7, max_new_tokens=64, seed=1)

    def make(model_id: str, answer, *, token: str = SECRET_TOKEN, **fields) -> ArenaModel:
        scripted_backend.answers[model_id] = answer
        server = BackendServer.objects.create(
            name=f"scripted-{model_id}", kind="openai", base_url=scripted_backend.url, auth_token=token,
            health_status=HealthStatus.UP, stall_timeout_s=5, deadline_s=20)
        return ArenaModel.objects.create(display_name=fields.pop("display_name", f"scripted {model_id}"),
                                         server=server, backend_model_id=model_id, preset=preset, enabled=True,
                                         **fields)

    yield make


# ---------------------------------------------------------------- WebSockets through the real ASGI stack

ORIGIN = b"http://localhost"


def ws(path: str, *, cookie: str | None = None, origin: bytes | None = ORIGIN):
    """A communicator on ``arena.asgi.application``: origin check, session auth and routing all run."""
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application

    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)
