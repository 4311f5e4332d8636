"""A backend's bearer token stays a secret: no page, export, log line or frame ever shows it.

The scripted backend echoes the Authorization header back in its errors (as a misbehaving proxy
might), so the token really does come back to us and has to be scrubbed on the way through.
"""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from django.urls import reverse

from arena.models import BackendServer, Battle, Generation, GenerationStatus
from tests.security.conftest import ROLES, SECRET_TOKEN, client_for, make_user, session_cookie, ws
from tests.security.test_access_matrix import TABLE, arena, objects, quick, url_of  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres", "require_redis")]


def body_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def admin_pages(battle: Battle, servers: list[BackendServer]) -> list[str]:
    pages = [reverse("admin:index"), reverse("admin:arena_backendserver_changelist"),
             reverse("admin:arena_arenamodel_changelist"), reverse("admin:arena_battle_changelist"),
             reverse("admin:arena_battle_change", args=[battle.pk]), reverse("admin:arena_backendserver_add")]
    for server in servers:
        pages.append(reverse("admin:arena_backendserver_change", args=[server.pk]))
        for contender in server.contenders.all():
            pages.append(reverse("admin:arena_arenamodel_change", args=[contender.pk]))
            pages.append(reverse("admin:arena_arenamodel_test_connection", args=[contender.pk]))
    return pages


def test_a_failing_generation_leaks_the_token_to_no_log_frame_or_page(
        role_users, scripted_contender, scripted_backend, in_process_generation, objects, arena, caplog):  # noqa: F811
    arena.server.auth_token = SECRET_TOKEN  # the leaderboard's contenders sit behind a token too
    arena.server.save()
    scripted_contender("leaky-status", ("status", 500))
    scripted_contender("leaky-midstream", ("midstream", "a partial answer "))
    # Only these two can be offered (the leaderboard's contenders are not health-checked as up).
    for level in ("", "httpx", "httpcore", "arena", "workers", "django", "celery"):
        caplog.set_level(logging.DEBUG, logger=level or None)
    cookie = session_cookie(role_users["rater"])

    async def scenario():
        communicator = ws("/ws/battle/", cookie=cookie)
        assert (await communicator.connect(timeout=10))[0]
        await communicator.send_json_to({"type": "prompt", "text": "Say something."})
        frames, ended = [], set()
        while ended != {"a", "b"}:
            frame = await communicator.receive_json_from(timeout=30)
            frames.append(frame)
            if frame["type"] in ("failed", "done"):
                ended.add(frame["side"])
        await communicator.disconnect()
        return frames

    frames = asyncio.run(scenario())
    battle = Battle.objects.get(rater=role_users["rater"])
    # The token went out and came back: every request carried it, every error echoed it.
    assert scripted_backend.requests and all(auth == f"Bearer {SECRET_TOKEN}" for auth, _ in scripted_backend.requests)
    failed = [f for f in frames if f["type"] == "failed"]
    assert {f["side"] for f in failed} == {"a", "b"}
    assert all(f["message"] == "This side could not answer. Start a new battle to keep going." for f in failed)
    assert SECRET_TOKEN not in json.dumps(frames)
    stored = list(Generation.objects.filter(turn__battle=battle).values_list("status", "error_message"))
    assert {status for status, _ in stored} == {GenerationStatus.FAILED}
    for _status, message in stored:
        assert message and SECRET_TOKEN not in message and "[redacted]" in message, message
    assert caplog.records, "nothing was logged: the capture is not looking at the right loggers"
    assert SECRET_TOKEN not in caplog.text
    for record in caplog.records:  # what a JSON or Sentry handler would see, not only the formatted text
        assert SECRET_TOKEN not in repr(record.args) + str(record.msg) + str(record.exc_text or ""), record

    # Every page any role can reach, the leaderboard exports and the admin pages (the test-connection
    # page makes the backend answer, and echo, again).
    servers = list(BackendServer.objects.exclude(auth_token=""))
    assert len(servers) == 3
    leaks = []
    for role in ROLES:
        client = client_for(role_users[role])
        urls = [url_of(name, row, objects) for name, row in TABLE.items()] + admin_pages(battle, servers)
        for url in urls:
            response = client.get(url)
            if SECRET_TOKEN.encode() in body_of(response):
                leaks.append(f"{role} {url} {response.status_code}")
    assert not leaks, leaks


def test_the_admin_form_never_renders_the_token_back(role_users, scripted_backend, scripted_contender):
    contender = scripted_contender("quiet", "fine.")
    server = contender.server
    admin = client_for(role_users["admin"])
    change = reverse("admin:arena_backendserver_change", args=[server.pk])
    page = admin.get(change).content.decode()
    assert SECRET_TOKEN not in page
    assert 'name="auth_token"' in page and 'type="password"' in page  # a write-only password field

    # A failed save (the connection check fails and echoes the new token) re-renders the form:
    # neither the typed token nor the stored one may appear in it.
    fresh_token = "sk-typed-in-just-now-0c3b1e77aa"
    form = {"name": server.name, "kind": "openai", "base_url": scripted_backend.url + "/echo",
            "auth_token": fresh_token, "max_concurrency": 4, "connect_timeout_s": 3, "stall_timeout_s": 5,
            "deadline_s": 20}
    response = admin.post(change, form)
    assert response.status_code == 200 and b"Could not reach the server" in response.content
    assert fresh_token.encode() not in response.content and SECRET_TOKEN.encode() not in response.content
    assert scripted_backend.requests[-1] == (f"Bearer {fresh_token}", {"GET": "/echo/v1/models"})  # echoed
    server.refresh_from_db()
    assert server.auth_token == SECRET_TOKEN  # nothing saved

    # Saving with the field left blank keeps the stored token; the page still does not show it.
    response = admin.post(change, {**form, "base_url": scripted_backend.url, "auth_token": ""}, follow=True)
    assert response.status_code == 200 and SECRET_TOKEN.encode() not in response.content
    server.refresh_from_db()
    assert server.auth_token == SECRET_TOKEN

    # The "check health" action reports an echoed error without the token.
    server.base_url = scripted_backend.url + "/echo"
    server.save()
    response = admin.post(reverse("admin:arena_backendserver_changelist"),
                          {"action": "check_health", "_selected_action": [server.pk]}, follow=True)
    assert response.status_code == 200 and SECRET_TOKEN.encode() not in response.content
    server.refresh_from_db()
    assert SECRET_TOKEN not in server.last_error and server.last_error
    assert SECRET_TOKEN not in admin.get(change).content.decode()


def test_a_viewer_or_rater_cannot_reach_any_admin_page_that_could_show_it(role_users, scripted_contender,
                                                                         django_user_model):
    contender = scripted_contender("quiet", "fine.")
    pages = [reverse("admin:arena_backendserver_change", args=[contender.server.pk]),
             reverse("admin:arena_arenamodel_test_connection", args=[contender.pk]),
             reverse("admin:arena_backendserver_changelist")]
    # A staff user without model permissions is not a superuser: no registry pages either.
    staff = make_user(django_user_model, "rater", "-staff-no-perms")
    staff.is_staff = True
    staff.save()
    for role, user in [*role_users.items(), ("staff-no-perms", staff)]:
        if role == "admin":
            continue
        for url in pages:
            response = client_for(user).get(url)
            assert response.status_code in (302, 403), (role, url, response.status_code)
            assert SECRET_TOKEN.encode() not in response.content
