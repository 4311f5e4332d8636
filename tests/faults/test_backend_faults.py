"""Each backend fault on one side of a battle, through a real Celery worker process and Redis.

The rater gets a plain "failed" frame for that side (no backend text, nothing naming the model),
the battle is failed, and no generation is left queued or streaming.
"""
from __future__ import annotations

import asyncio

import pytest

from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.services.generation import FAILED_SIDE_MESSAGE
from tests.faults.conftest import consumer_for, frames_until, start_worker
from tests.fixtures.services import redis_url, require_service, subprocess_env
from workers.emulator import Fault

pytestmark = pytest.mark.django_db(transaction=True)

FAULTS = [
    pytest.param(Fault(kind="refuse"), "ollama", {}, id="refuse"),
    pytest.param(Fault(kind="500"), "openai", {}, id="500"),
    pytest.param(Fault(kind="429"), "ollama", {}, id="429-overloaded"),
    pytest.param(Fault(kind="401"), "openai", {}, id="401"),
    pytest.param(Fault(kind="422"), "tgi", {}, id="422"),
    pytest.param(Fault(kind="error_mid_stream", after_tokens=2), "tgi", {}, id="error-mid-stream"),
    pytest.param(Fault(kind="stall", after_tokens=2), "ollama", {"stall_timeout_s": 1.0}, id="stall"),
    pytest.param(Fault(kind="malformed_line", after_tokens=2), "openai", {}, id="malformed-line"),
    pytest.param(Fault(kind="slow_headers", delay_ms=2500), "tgi", {"stall_timeout_s": 1.0}, id="slow-headers"),
]


@pytest.fixture(scope="module")
def worker(django_db_setup):
    """One real worker process for the whole module (it only holds ids; each test has its own rows)."""
    from django.conf import settings

    require_service(settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), "PostgreSQL")
    require_service(bool(redis_url()), "Redis")
    process = start_worker(subprocess_env(), "faults")
    yield process
    process.stop()


def both_sides_ended(frames) -> bool:
    ended = {f["side"] for f in frames if f["type"] in ("done", "failed")}
    return ended == {"a", "b"}


@pytest.mark.parametrize(("fault", "kind", "server_fields"), FAULTS)
def test_a_backend_fault_fails_that_side_plainly(fault, kind, server_fields, worker, emulator_faults, contender_on,
                                                 rater):
    faulty = contender_on("fault-target", kind, **server_fields)
    healthy = contender_on("test-quick-1b", "ollama")
    emulator_faults.set_fault("fault-target", fault)

    async def scenario():
        ws = consumer_for(rater)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "prompt", "text": "Tell me about tea."})
        frames = await frames_until(ws, both_sides_ended, timeout=30)
        await ws.disconnect()
        return frames

    frames = asyncio.run(scenario())
    battle = Battle.objects.get(rater=rater)
    generations = {g.contender_id: g for g in Generation.objects.filter(turn__battle=battle)}
    failed, other = generations[faulty.pk], generations[healthy.pk]
    assert failed.status == GenerationStatus.FAILED and failed.error_code and failed.error_message
    assert other.status not in (GenerationStatus.QUEUED, GenerationStatus.STREAMING)
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.FAILED
    failure = [f for f in frames if f["type"] == "failed"]
    assert failure == [{"type": "failed", "side": failed.side, "message": FAILED_SIDE_MESSAGE}]
    wire = " ".join(str(f) for f in frames)
    for secret in (failed.error_message, "fault-target", faulty.display_name, faulty.server.base_url):
        assert secret not in wire
