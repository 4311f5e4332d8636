from __future__ import annotations

import pytest

from arena.models import ArenaModel, BackendServer, DecodingPreset, HealthStatus


@pytest.fixture
def preset(db):
    return DecodingPreset.objects.create(name="test-preset", temperature=0.7, max_new_tokens=32, seed=1)


@pytest.fixture
def make_contender(db, emulator, preset):
    """Register an emulated model as a contender behind a server of the given protocol."""

    def make(model_name: str, kind: str = "tgi", *, health=HealthStatus.UP, token: str = "", **fields) -> ArenaModel:
        server = BackendServer.objects.create(
            name=f"{kind}-{model_name}-{BackendServer.objects.count()}", kind=kind,
            base_url=emulator.url_for(kind, model_name), auth_token=token, health_status=health,
            stall_timeout_s=5, deadline_s=30,
        )
        return ArenaModel.objects.create(
            display_name=fields.pop("display_name", f"{model_name} via {kind} #{server.pk}"), server=server,
            backend_model_id="tgi" if kind == "tgi" else model_name, preset=preset, enabled=True, **fields,
        )

    return make


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    client.force_login(user)
    return client
