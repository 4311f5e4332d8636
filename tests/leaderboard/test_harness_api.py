"""Posting results files: the JSON API for CI pipelines (token or session) and the admin upload form."""
from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.urls import reverse

from arena.models import ArenaModel
from arena.roles import VIEWER
from leaderboard.harness.services import api_token_create
from leaderboard.models import ApiToken, BenchmarkColumnSet, HarnessFile, HarnessResult
from tests.leaderboard.test_harness_parser import reference_doc, reference_file
from tests.leaderboard.test_snapshots import arena  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

API = "/leaderboard/api/harness/import"


@pytest.fixture
def dummy(arena):
    return ArenaModel.objects.create(display_name="Dummy 7B", server=arena.server, preset=arena.preset,
                                     backend_model_id="acme/dummy-7b")


@pytest.fixture
def staff(arena):
    return arena.user("ci-bot", role=None, is_staff=True)


@pytest.fixture
def csrf_client():
    return Client(enforce_csrf_checks=True)


def upload(folder: str = "v0.4.13-dummy-group") -> SimpleUploadedFile:
    path = reference_file(folder)
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/json")


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_url_is_the_documented_one():
    assert reverse("leaderboard:harness-import-api") == API


# ---------------------------------------------------------------------------------------------
# Token authentication (no CSRF)


def test_token_post_imports_and_is_idempotent(csrf_client, dummy, staff):
    _, key = api_token_create(user=staff, name="nightly")
    response = csrf_client.post(API, {"file": upload()}, **bearer(key))
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["ok"] and data["created"] and data["contender"] == "Dummy 7B" and data["rows"] == 6
    stored = HarnessFile.objects.get()
    assert stored.imported_by == staff and stored.sha256 == data["sha256"] and stored.pk == data["file_id"]
    assert ApiToken.objects.get().last_used_at is not None

    again = csrf_client.post(API, {"file": upload()}, **bearer(key))
    assert again.status_code == 200 and again.json()["already_imported"] is True
    assert HarnessFile.objects.count() == 1


def test_token_post_with_raw_json_body_and_options(csrf_client, arena, dummy, staff):
    other = ArenaModel.objects.create(display_name="Other", server=arena.server, preset=arena.preset,
                                      backend_model_id="other")
    _, key = api_token_create(user=staff, name="ci")
    body = reference_file("v0.3.0").read_bytes()
    dry = csrf_client.post(f"{API}?dry_run=1&model=Other&name=v03.json", body, content_type="application/json",
                           **bearer(key))
    assert dry.status_code == 200 and dry.json()["dry_run"] and len(dry.json()["results"]) == 3
    assert HarnessFile.objects.count() == 0
    done = csrf_client.post(f"{API}?model=Other&name=v03.json", body, content_type="application/json",
                            **bearer(key))
    assert done.status_code == 201 and done.json()["contender_id"] == other.pk
    assert HarnessFile.objects.get().file_name == "v03.json"


def test_errors_are_400_and_write_nothing(csrf_client, arena, staff):
    _, key = api_token_create(user=staff, name="ci")
    unknown = csrf_client.post(API, {"file": upload()}, **bearer(key))  # no contender for acme/dummy-7b
    assert unknown.status_code == 400
    assert unknown.json() == {"ok": False, "error": unknown.json()["error"]}
    assert "no contender matches model 'acme/dummy-7b'" in unknown.json()["error"]
    doc = reference_doc("v0.4.13-dummy-group")
    doc["lm_eval_version"] = "0.6.1"
    future = csrf_client.post(API, {"file": SimpleUploadedFile("r.json", json.dumps(doc).encode())}, **bearer(key))
    assert future.status_code == 400 and "0.6.1 is not supported" in future.json()["error"]
    broken = csrf_client.post(API, {"file": SimpleUploadedFile("r.json", b'{"results": ')}, **bearer(key))
    assert broken.status_code == 400 and "nothing was imported" in broken.json()["error"]
    empty = csrf_client.post(API, {}, **bearer(key))
    assert empty.status_code == 400 and "expected a results file" in empty.json()["error"]
    assert HarnessFile.objects.count() == 0 and HarnessResult.objects.count() == 0


def test_tokens_that_do_not_authenticate(csrf_client, arena, dummy, staff):
    viewer = arena.user("pm", role=VIEWER)
    _, viewer_key = api_token_create(user=viewer, name="not staff")
    token, revoked_key = api_token_create(user=staff, name="old")
    token.revoked = True
    token.save()
    assert csrf_client.post(API, {"file": upload()}, **bearer(viewer_key)).status_code == 403
    assert csrf_client.post(API, {"file": upload()}, **bearer(revoked_key)).status_code == 401
    assert csrf_client.post(API, {"file": upload()}, **bearer("lbt_made-up")).status_code == 401
    assert csrf_client.post(API, {"file": upload()}, HTTP_AUTHORIZATION="Basic abc").status_code == 401
    staff.is_active = False
    staff.save()
    _, inactive_key = api_token_create(user=staff, name="gone")
    assert csrf_client.post(API, {"file": upload()}, **bearer(inactive_key)).status_code == 401
    assert HarnessFile.objects.count() == 0


# ---------------------------------------------------------------------------------------------
# Session authentication (CSRF enforced)


def test_anonymous_and_non_staff_sessions_are_refused(csrf_client, arena, dummy):
    anonymous = csrf_client.post(API, {"file": upload()})
    assert anonymous.status_code == 401 and not anonymous.json()["ok"]
    token = _get_new_csrf_string()
    csrf_client.cookies["csrftoken"] = token
    for user in (arena.user("rater"), arena.user("pm", role=VIEWER)):
        csrf_client.force_login(user)
        refused = csrf_client.post(API, {"file": upload()}, HTTP_X_CSRFTOKEN=token)
        assert refused.status_code == 403 and "admins" in refused.json()["error"]
    assert csrf_client.get(API).status_code == 405
    assert HarnessFile.objects.count() == 0


def test_staff_session_needs_the_csrf_token(csrf_client, dummy, staff):
    csrf_client.force_login(staff)
    refused = csrf_client.post(API, {"file": upload()})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert HarnessFile.objects.count() == 0
    token = _get_new_csrf_string()
    csrf_client.cookies["csrftoken"] = token
    wrong = csrf_client.post(API, {"file": upload()}, HTTP_X_CSRFTOKEN=_get_new_csrf_string())
    assert wrong.status_code == 403 and HarnessFile.objects.count() == 0
    accepted = csrf_client.post(API, {"file": upload()}, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201 and HarnessFile.objects.get().imported_by == staff


# ---------------------------------------------------------------------------------------------
# Admin


@pytest.fixture
def superuser(arena, django_user_model):
    return django_user_model.objects.create_superuser("root", email="root@example.org", password=None)


def test_admin_upload_form(client, dummy, superuser):
    client.force_login(superuser)
    url = reverse("admin:leaderboard_harnessfile_upload")
    page = client.get(url)
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.content.decode()
    listing = client.get(reverse("admin:leaderboard_harnessfile_changelist")).content.decode()
    assert url in listing

    dry = client.post(url, {"file": upload(), "dry_run": "on"})
    assert dry.status_code == 200 and "would be imported for contender &#x27;Dummy 7B&#x27;" in dry.content.decode()
    assert HarnessFile.objects.count() == 0

    done = client.post(url, {"file": upload()})
    stored = HarnessFile.objects.get()
    assert done.status_code == 302 and done["Location"] == reverse("admin:leaderboard_harnessfile_change",
                                                                   args=[stored.pk])
    assert stored.imported_by == superuser and stored.results.count() == 6
    change = client.get(done["Location"]).content.decode()
    assert stored.sha256 in change and "mini_suite" in change

    again = client.post(url, {"file": upload()}, follow=True)
    assert any("already imported" in str(message) for message in get_messages(again.wsgi_request))
    assert HarnessFile.objects.count() == 1


def test_admin_upload_errors_import_nothing(client, arena, superuser):
    client.force_login(superuser)
    url = reverse("admin:leaderboard_harnessfile_upload")
    unknown = client.post(url, {"file": upload()})
    assert unknown.status_code == 200 and "no contender matches model" in unknown.content.decode()
    bad = client.post(url, {"file": SimpleUploadedFile("x.json", b"[]")})
    assert bad.status_code == 200 and "nothing was imported" in bad.content.decode()
    chosen = ArenaModel.objects.create(display_name="Chosen", server=arena.server, preset=arena.preset,
                                       backend_model_id="chosen")
    client.post(url, {"file": upload("v0.3.0"), "contender": chosen.pk})
    assert HarnessFile.objects.get().contender == chosen


def test_admin_upload_is_for_staff_only(client, arena, dummy):
    url = reverse("admin:leaderboard_harnessfile_upload")
    assert client.get(url).status_code == 302
    client.force_login(arena.user("pm", role=VIEWER))
    response = client.post(url, {"file": upload()})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert HarnessFile.objects.count() == 0


def test_admin_column_sets_and_tokens(client, superuser, staff):
    client.force_login(superuser)
    response = client.post(reverse("admin:leaderboard_benchmarkcolumnset_add"), {
        "key": "open_llm_v2", "name": "Clash", "description": "", "columns-TOTAL_FORMS": "0",
        "columns-INITIAL_FORMS": "0"})
    assert response.status_code == 200 and "built-in column set" in response.content.decode()
    response = client.post(reverse("admin:leaderboard_benchmarkcolumnset_add"), {
        "key": "internal", "name": "Internal", "description": "", "average": "on",
        "columns-TOTAL_FORMS": "1", "columns-INITIAL_FORMS": "0", "columns-0-position": "1",
        "columns-0-label": "QA", "columns-0-task": "internal_qa", "columns-0-metric": "exact_match,strict-match",
        "columns-0-filter": "", "columns-0-scale": "100"})
    assert response.status_code == 302
    column = BenchmarkColumnSet.objects.get(key="internal").columns.get()
    assert (column.metric_name, column.filter_name) == ("exact_match", "strict-match")

    response = client.post(reverse("admin:leaderboard_apitoken_add"), {"user": staff.pk, "name": "pipeline"},
                           follow=True)
    shown = [str(message) for message in get_messages(response.wsgi_request) if str(message).startswith("Token for")]
    assert len(shown) == 1
    key = shown[0].split(": ", 1)[1].split(" ", 1)[0]
    token = ApiToken.objects.get()
    assert token.user == staff and token.prefix == key[:12] and key not in token.key_hash
    viewer = client.post(reverse("admin:leaderboard_apitoken_add"), {"user": superuser.pk, "name": "x"})
    assert viewer.status_code == 302  # a superuser is staff
