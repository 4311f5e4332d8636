"""The deadline sweeper: whatever a dead worker or a lost task left queued or streaming, it ends."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.services.battles import battle_start, turn_submit
from arena.services.generation import (
    FAILED_SIDE_MESSAGE, QUEUED_GRACE_S, _claim, generation_run, generations_expire, partial_name,
)
from tests.faults.conftest import consumer_for, frames_until
from workers import partials
from workers.tasks import expire_generations

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_enqueue(monkeypatch):
    # Nothing runs the generations: the test plays the part of a worker that died.
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)


@pytest.fixture
def battle(rater, contender_on, no_enqueue):
    contender_on("test-quick-1b", "ollama", deadline_s=3.0)
    contender_on("demo-terse-7b", "openai", deadline_s=3.0)
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Explain tea.")
    return battle


def sweep(**kwargs) -> int:
    """The sweep from a thread of its own (as a worker thread runs it), closing its connection after."""
    from django.db import connection

    try:
        return generations_expire(**kwargs)
    finally:
        connection.close()


def sides(battle) -> dict[str, Generation]:
    return {g.side: g for g in Generation.objects.filter(turn__battle=battle).select_related("contender__server")}


def test_a_stream_past_its_deadline_fails_once_and_the_rater_is_told(battle, rater, require_redis):
    generation = sides(battle)["a"]
    assert _claim(generation.pk) is not None  # a worker claimed it, then died
    partials.record(partial_name(generation.pk), 1, "Tea is")
    Generation.objects.filter(pk=generation.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))

    async def scenario():
        ws = consumer_for(rater)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "resume", "battle": battle.public_id.hex})
        state = (await frames_until(ws, lambda f: bool(f)))[0]
        expired = await asyncio.to_thread(sweep)
        frames = await frames_until(ws, lambda f: any(x["type"] == "failed" for x in f), timeout=10)
        again = await asyncio.to_thread(sweep)
        await ws.disconnect()
        return state, expired, frames, again

    state, expired, frames, again = asyncio.run(scenario())
    assert state["type"] == "state" and state["turns"][0]["a"]["status"] == "streaming"
    assert expired == 1 and again == 0  # idempotent: a second sweep changes nothing
    assert frames[-1] == {"type": "failed", "side": "a", "message": FAILED_SIDE_MESSAGE}
    stored = Generation.objects.get(pk=generation.pk)
    assert stored.status == GenerationStatus.FAILED and stored.error_code == "deadline"
    assert stored.text == "Tea is" and stored.finished_at is not None
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.FAILED
    # The other side was queued and is not overdue yet: left alone.
    assert Generation.objects.get(pk=sides(battle)["b"].pk).status == GenerationStatus.QUEUED


def test_queued_generations_expire_after_the_server_deadline_plus_grace(battle):
    generations = sides(battle)
    deadline_s = generations["a"].contender.server.deadline_s
    created = generations["a"].created_at
    # Just inside the allowance: nothing happens.
    assert generations_expire(now=created + timedelta(seconds=deadline_s + QUEUED_GRACE_S - 1)) == 0
    assert set(Generation.objects.filter(turn__battle=battle).values_list("status", flat=True)) == {"queued"}
    assert generations_expire(now=created + timedelta(seconds=deadline_s + QUEUED_GRACE_S + 5)) == 2
    assert set(Generation.objects.filter(turn__battle=battle).values_list("error_code", flat=True)) == {"deadline"}
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.FAILED
    # A task delivered late finds nothing to claim: no stream starts.
    generation_run(generation_id=generations["a"].pk)
    assert Generation.objects.get(pk=generations["a"].pk).attempts == 0


def test_a_stream_within_its_deadline_is_left_alone(battle):
    generation = sides(battle)["a"]
    claimed = _claim(generation.pk)
    assert generations_expire(now=claimed.deadline_at - timedelta(milliseconds=100)) == 0
    assert Generation.objects.get(pk=generation.pk).status == GenerationStatus.STREAMING
    assert generations_expire(now=claimed.deadline_at + timedelta(milliseconds=100)) == 1


def test_a_redelivered_task_leaves_a_streaming_generation_to_the_sweeper(battle):
    generation = sides(battle)["a"]
    _claim(generation.pk)  # the first delivery claimed it; its worker was killed
    generation_run(generation_id=generation.pk)  # acks_late: the same task again, on another worker
    again = Generation.objects.get(pk=generation.pk)
    assert again.status == GenerationStatus.STREAMING and again.attempts == 1 and again.text == ""
    Generation.objects.filter(pk=generation.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert expire_generations() == 1  # the periodic task body
    assert Generation.objects.get(pk=generation.pk).status == GenerationStatus.FAILED


def test_the_sweeper_is_on_the_beat_schedule():
    entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "arena.expire_generations"]
    assert len(entries) == 1 and 0 < float(entries[0]["schedule"]) <= 60
    assert expire_generations.name == "arena.expire_generations"
