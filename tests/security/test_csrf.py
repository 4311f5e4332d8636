"""Every state-changing POST made with a session needs the CSRF token; without it nothing changes.

Each refusal is paired with the same request carrying the token, so the 403 is shown to be the
CSRF check and not some other rejection.
"""
from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse

from arena.models import BackendServer
from leaderboard.harness.services import api_token_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

PASSWORD = "pw-csrf-test-123"


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def csrf_token(client: Client, url: str) -> str:
    assert client.get(url).status_code == 200
    return client.cookies[settings.CSRF_COOKIE_NAME].value


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("csrf-admin", "csrf@example.com", PASSWORD)


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_login_needs_the_token(staff, login_url):
    client = csrf_client()
    refused = client.post(login_url, {"username": "csrf-admin", "password": PASSWORD})
    assert refused.status_code == 403 and b"CSRF" in refused.content
    assert SESSION_KEY not in client.session
    token = csrf_token(client, login_url)
    accepted = client.post(login_url, {"username": "csrf-admin", "password": PASSWORD,
                                       "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302 and client.session[SESSION_KEY] == str(staff.pk)


def test_logout_needs_the_token(staff):
    client = csrf_client()
    client.force_login(staff)
    assert client.post(reverse("logout")).status_code == 403
    assert client.get(reverse("history")).status_code == 200  # still logged in
    token = csrf_token(client, reverse("home"))
    assert client.post(reverse("logout"), {"csrfmiddlewaretoken": token}).status_code in (200, 302)
    assert client.get(reverse("history")).status_code == 302  # logged out


def test_admin_forms_and_actions_need_the_token(staff):
    client = csrf_client()
    client.force_login(staff)
    add = reverse("admin:arena_backendserver_add")
    form = {"name": "csrf-made", "kind": "openai", "base_url": "http://127.0.0.1:9", "max_concurrency": 4,
            "connect_timeout_s": 3, "stall_timeout_s": 5, "deadline_s": 20, "skip_connection_check": "on"}
    assert client.post(add, form).status_code == 403
    assert not BackendServer.objects.filter(name="csrf-made").exists()
    server = BackendServer.objects.create(name="csrf-kept", kind="openai", base_url="http://127.0.0.1:9")
    changelist = reverse("admin:arena_backendserver_changelist")
    delete = {"action": "delete_selected", "_selected_action": [server.pk], "post": "yes"}
    assert client.post(changelist, delete).status_code == 403
    assert BackendServer.objects.filter(pk=server.pk).exists()
    assert client.post(reverse("admin:logout")).status_code == 403
    # With the token, the same add goes through.
    token = csrf_token(client, add)
    assert client.post(add, {**form, "csrfmiddlewaretoken": token}).status_code == 302
    assert BackendServer.objects.filter(name="csrf-made").exists()


def test_harness_import_with_a_session_needs_the_token_but_a_bearer_token_does_not(staff):
    url = reverse("leaderboard:harness-import-api")
    client = csrf_client()
    client.force_login(staff)
    refused = client.post(url, data=b"{}", content_type="application/json")
    assert refused.status_code == 403
    assert refused.json() == {"ok": False, "error": "CSRF check failed: send the csrftoken cookie and the "
                                                    "X-CSRFToken header"}
    token = csrf_token(client, reverse("home"))
    passed = client.post(url, data=b"{}", content_type="application/json", headers={"X-CSRFToken": token})
    assert passed.status_code == 400 and passed.json()["ok"] is False  # past the CSRF check: the file is bad
    # A script with a bearer token and no cookies is not a browser: no CSRF token is needed, or possible.
    _token, key = api_token_create(user=staff, name="ci")
    script = csrf_client()
    by_token = script.post(url, data=b"{}", content_type="application/json", headers={"Authorization": f"Bearer {key}"})
    assert by_token.status_code == 400 and by_token.json()["ok"] is False
