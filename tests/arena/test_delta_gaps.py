"""A batch lost between worker and consumer is healed with a snapshot, never shown as a gap."""
from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group

from arena.models import Generation, GenerationStatus
from arena.services.battles import battle_group, battle_start, turn_submit
from arena.services.generation import partial_name
from tests.arena.test_battle_consumer import communicator_for, until
from workers import partials

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_gap_in_sequence_numbers_brings_a_snapshot_then_live_deltas(make_contender, django_user_model,
                                                                      django_capture_on_commit_callbacks):
    make_contender("demo-terse-7b", "tgi")
    make_contender("test-quick-1b", "openai")
    rater = django_user_model.objects.create_user("gap-rater", password="pw-gap-1234")
    rater.groups.add(Group.objects.get_or_create(name="rater")[0])
    battle = battle_start(rater=rater)
    with django_capture_on_commit_callbacks(execute=False):  # no worker: this test plays it
        turn_submit(battle=battle, rater=rater, prompt="Say hello.")
    generation = Generation.objects.get(turn__battle=battle, side="a")
    Generation.objects.filter(pk=generation.pk).update(status=GenerationStatus.STREAMING)
    name = partial_name(generation.pk)
    partials.record(name, 1, "Hello ")

    def delta(seq: int, text: str) -> dict:
        return {"type": "generation.delta", "side": "a", "seq": seq, "text": text, "generation": generation.pk}

    async def scenario():
        layer = get_channel_layer()
        ws = communicator_for(rater)
        await ws.connect()
        await ws.send_json_to({"type": "resume", "battle": str(battle.public_id)})
        first = (await until(ws, {"state"}))[-1]
        # Batch 2 is recorded but never arrives (dropped over capacity); batch 3 arrives.
        partials.record(name, 2, "big ")
        partials.record(name, 3, "world")
        await layer.group_send(battle_group(battle), delta(3, "world"))
        healed = await ws.receive_json_from(timeout=5)
        await layer.group_send(battle_group(battle), delta(2, "big "))  # late: part of the snapshot
        partials.record(name, 4, "!")
        await layer.group_send(battle_group(battle), delta(4, "!"))
        live = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return first, healed, live

    first, healed, live = asyncio.run(scenario())
    assert first["turns"][-1]["a"]["text"] == "Hello "
    assert healed["type"] == "state"
    assert healed["turns"][-1]["a"]["text"] == "Hello big world"
    assert healed["turns"][-1]["a"]["seq"] == 3
    assert live == {"type": "delta", "side": "a", "seq": 4, "text": "!"}
    partials.forget(name)
