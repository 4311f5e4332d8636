"""Backend health: down after repeated failures, up after a success; down servers are not offered."""
from __future__ import annotations

import pytest

from arena.models import BackendServer, HealthStatus
from arena.selectors import contenders_offerable
from arena.services.registry import server_health_check
from tests.fixtures.services import free_port
from workers.tasks import check_backend_health

pytestmark = pytest.mark.django_db


def test_server_goes_down_after_failures_and_up_after_success(make_contender, settings):
    settings.HEALTH_FAILURES_BEFORE_DOWN = 2
    contender = make_contender("demo-terse-7b", "ollama")
    server = contender.server
    good_url = server.base_url
    server.base_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server.save()

    first = server_health_check(server=server)
    assert not first.ok and first.status == HealthStatus.UP  # one failure is not enough
    assert contender in contenders_offerable()
    second = server_health_check(server=server)
    assert second.status == HealthStatus.DOWN
    assert "connect" in second.error.lower() or "refused" in second.error.lower()
    assert contender not in contenders_offerable()

    server.base_url = good_url
    server.save()
    check_backend_health()  # the periodic task itself, run in-process
    server.refresh_from_db()
    assert server.health_status == HealthStatus.UP and server.consecutive_failures == 0
    assert contender in contenders_offerable()


def test_disabled_or_zero_weight_contenders_are_not_offered(make_contender):
    enabled = make_contender("demo-terse-7b", "openai")
    disabled = make_contender("demo-terse-7b", "openai", display_name="off")
    disabled.enabled = False
    disabled.save()
    weightless = make_contender("demo-terse-7b", "openai", display_name="zero", sampling_weight=0)
    unknown = make_contender("demo-terse-7b", "openai", display_name="unchecked", health=HealthStatus.UNKNOWN)
    offered = set(contenders_offerable())
    assert enabled in offered
    assert not offered & {disabled, weightless, unknown}


def test_health_error_never_contains_the_token(make_contender, emulator, settings):
    settings.HEALTH_FAILURES_BEFORE_DOWN = 1
    contender = make_contender("demo-terse-7b", "tgi", token="s3cret-token-value")
    server = BackendServer.objects.get(pk=contender.server_id)
    server.base_url = f"http://s3cret-token-value.invalid:{free_port()}"
    server.save()
    result = server_health_check(server=server)
    assert not result.ok
    server.refresh_from_db()
    assert "s3cret-token-value" not in server.last_error
