"""Backend text PostgreSQL cannot store (NUL, lone surrogates) is replaced, never left streaming."""
from __future__ import annotations

import asyncio

import pytest

from arena.models import ArenaModel, BackendServer, Battle, BattleStatus, Generation, GenerationStatus, HealthStatus
from arena.services.battles import battle_start, turn_submit
from arena.services.generation import generation_run, storable_text
from tests.faults.conftest import consumer_for, frames_until
from tests.security.conftest import ScriptedBackend

pytestmark = pytest.mark.django_db(transaction=True)

NUL_ANSWER = "Tea\x00 is a drink\x00."
SURROGATE_ANSWER = "Coffee \ud800is bitter."


@pytest.fixture
def backend():
    server = ScriptedBackend().start()
    yield server
    server.stop()


def scripted(backend, preset, model_id: str, answer: str) -> ArenaModel:
    backend.answers[model_id] = answer
    server = BackendServer.objects.create(name=f"scripted-{model_id}", kind="openai", base_url=backend.url,
                                          health_status=HealthStatus.UP, stall_timeout_s=5, deadline_s=20)
    return ArenaModel.objects.create(display_name=f"scripted {model_id}", server=server, backend_model_id=model_id,
                                     preset=preset, enabled=True)


def test_storable_text_replaces_only_what_cannot_be_stored():
    assert storable_text("plain ünïcode 🫖") == "plain ünïcode 🫖"
    assert storable_text("a\x00b") == "a\ufffdb"
    assert storable_text("x\ud800y") == "x?y"
    assert storable_text("\x00\udfff") == "\ufffd?"


def test_a_backend_answer_with_nul_and_a_lone_surrogate_is_stored_and_shown(backend, preset, rater, monkeypatch,
                                                                              require_postgres):
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)
    scripted(backend, preset, "nul-model", NUL_ANSWER)
    scripted(backend, preset, "surrogate-model", SURROGATE_ANSWER)
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Explain tea.")
    generations = list(Generation.objects.filter(turn__battle=battle))

    def run_all():
        from django.db import connection

        try:
            for generation in generations:
                generation_run(generation_id=generation.pk)
        finally:
            connection.close()

    async def scenario():
        ws = consumer_for(rater)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "resume", "battle": battle.public_id.hex})
        await frames_until(ws, lambda f: bool(f))
        await asyncio.to_thread(run_all)
        frames = await frames_until(ws, lambda f: any(x["type"] == "ready" for x in f), timeout=20)
        await ws.disconnect()
        return frames

    frames = asyncio.run(scenario())
    stored = {g.contender.backend_model_id: g for g in Generation.objects.filter(turn__battle=battle)
              .select_related("contender")}
    assert stored["nul-model"].status == GenerationStatus.DONE
    assert stored["nul-model"].text == "Tea\ufffd is a drink\ufffd."
    assert stored["surrogate-model"].status == GenerationStatus.DONE
    assert stored["surrogate-model"].text == "Coffee ?is bitter."
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.ACTIVE
    # What the rater saw is what was stored: the same replacement on the wire.
    for generation in stored.values():
        shown = "".join(f["text"] for f in frames if f["type"] == "delta" and f["side"] == generation.side)
        assert shown == generation.text
    assert not any("\x00" in str(f) for f in frames)
