"""Admins register servers and contenders, test connections and discover models in the Django admin."""
from __future__ import annotations

import pytest
from django.urls import reverse

from arena.models import ArenaModel, BackendServer, HealthStatus
from tests.fixtures.services import free_port
from workers.emulator import Fault

pytestmark = pytest.mark.django_db

ADD_SERVER = reverse("admin:arena_backendserver_add")


def server_form(**overrides):
    data = {"name": "gpu-1", "kind": "ollama", "base_url": "", "auth_token": "", "max_concurrency": "4",
            "connect_timeout_s": "2", "stall_timeout_s": "10", "deadline_s": "60"}
    data.update(overrides)
    return data


def test_register_reachable_server(admin_client, emulator):
    response = admin_client.post(ADD_SERVER, server_form(base_url=emulator.url_for("ollama", "demo-terse-7b")))
    assert response.status_code == 302, response.content.decode()[:2000]
    server = BackendServer.objects.get(name="gpu-1")
    assert server.health_status == HealthStatus.UP


@pytest.mark.parametrize("overrides, message", [
    ({"base_url": "http://127.0.0.1:{port}"}, "Could not reach the server"),
    ({"base_url": "not a url"}, "Enter a valid URL"),
    ({"kind": "grpc", "base_url": "http://127.0.0.1:{port}"}, "Select a valid choice"),
])
def test_bad_server_configuration_is_a_clear_error_and_saves_nothing(admin_client, overrides, message):
    port = free_port()
    data = server_form(**{k: v.format(port=port) for k, v in overrides.items()})
    response = admin_client.post(ADD_SERVER, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not BackendServer.objects.exists()


def test_unreachable_server_can_be_saved_on_purpose(admin_client):
    response = admin_client.post(ADD_SERVER, server_form(base_url=f"http://127.0.0.1:{free_port()}",
                                                         skip_connection_check="on"))
    assert response.status_code == 302
    assert BackendServer.objects.get(name="gpu-1").health_status == HealthStatus.UNKNOWN


def test_auth_token_is_write_only(admin_client, emulator):
    url = emulator.url_for("openai", "demo-terse-7b")
    admin_client.post(ADD_SERVER, server_form(kind="openai", base_url=url, auth_token="tok-ABCDEF-123"))
    server = BackendServer.objects.get(name="gpu-1")
    assert server.auth_token == "tok-ABCDEF-123"
    change_url = reverse("admin:arena_backendserver_change", args=[server.pk])
    page = admin_client.get(change_url).content.decode()
    assert "tok-ABCDEF-123" not in page
    listing = admin_client.get(reverse("admin:arena_backendserver_changelist")).content.decode()
    assert "tok-ABCDEF-123" not in listing
    # Saving again without typing the token keeps it; the clear box removes it.
    admin_client.post(change_url, server_form(kind="openai", base_url=url, max_concurrency="8"))
    server.refresh_from_db()
    assert server.auth_token == "tok-ABCDEF-123" and server.max_concurrency == 8
    admin_client.post(change_url, server_form(kind="openai", base_url=url, clear_auth_token="on"))
    server.refresh_from_db()
    assert server.auth_token == ""


def test_discover_models_creates_disabled_contenders(admin_client, emulator):
    server = BackendServer.objects.create(name="ollama-host", kind="ollama",
                                          base_url=emulator.url_for("ollama", "demo-terse-7b"))
    changelist = reverse("admin:arena_backendserver_changelist")
    response = admin_client.post(changelist, {"action": "discover_models", "_selected_action": [server.pk]},
                                 follow=True)
    assert response.status_code == 200
    created = ArenaModel.objects.filter(server=server)
    served = {m.name for m in emulator.models}
    assert {c.backend_model_id for c in created} == served
    assert not any(c.enabled for c in created)
    # Running it again creates nothing new.
    admin_client.post(changelist, {"action": "discover_models", "_selected_action": [server.pk]})
    assert ArenaModel.objects.filter(server=server).count() == len(served)


def test_discover_on_tgi_registers_its_single_model(admin_client, emulator):
    server = BackendServer.objects.create(name="tgi-host", kind="tgi",
                                          base_url=emulator.url_for("tgi", "demo-coder-34b"))
    admin_client.post(reverse("admin:arena_backendserver_changelist"),
                      {"action": "discover_models", "_selected_action": [server.pk]})
    (contender,) = ArenaModel.objects.filter(server=server)
    assert contender.backend_model_id == "tgi" and "demo-coder-34b" in contender.display_name


def test_contender_with_unknown_model_id_is_refused(admin_client, emulator, preset):
    server = BackendServer.objects.create(name="ollama-host", kind="ollama",
                                          base_url=emulator.url_for("ollama", "demo-terse-7b"))
    response = admin_client.post(reverse("admin:arena_arenamodel_add"), {
        "display_name": "Typo", "server": server.pk, "backend_model_id": "demo-terse-7", "api": "chat",
        "preset": preset.pk, "flavour": "chat", "aliases": "[]", "sampling_weight": "1",
    })
    assert response.status_code == 200
    page = response.content.decode()
    assert "The server has no model demo-terse-7." in page and "demo-terse-7b" in page
    assert not ArenaModel.objects.exists()


def test_test_connection_shows_speed_and_tokens(admin_client, make_contender):
    contender = make_contender("demo-terse-7b", "tgi")
    page = admin_client.get(reverse("admin:arena_arenamodel_test_connection", args=[contender.pk])).content.decode()
    assert "Connection works." in page
    assert 'id="ttft"' in page and " ms" in page
    assert 'id="tokens"' in page


def test_test_connection_failure_is_shown_plainly(admin_client, make_contender, emulator):
    contender = make_contender("fault-target", "openai")
    emulator.set_fault("fault-target", Fault(kind="500"))
    page = admin_client.get(reverse("admin:arena_arenamodel_test_connection", args=[contender.pk])).content.decode()
    assert "Connection failed" in page


def test_non_staff_cannot_reach_registry(client, django_user_model):
    user = django_user_model.objects.create_user("rater1", password="pw-rater-123")
    client.force_login(user)
    response = client.get(ADD_SERVER)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
