"""Stop, regenerate, named battles and the identity-leak flag: services and the worker, on PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from arena.models import ArenaModel, Battle, BattleStatus, DecodingPreset, Generation, GenerationStatus, Vote, Winner
from arena.services.battles import (
    BattleError, battle_start, battle_start_named, turn_regenerate, turn_stop, turn_submit, vote_cast,
)
from arena.services.generation import generation_run, partial_name
from workers import partials

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rater(django_user_model):
    return django_user_model.objects.create_user("rater-c", password="pw-rater-123")


@pytest.fixture
def no_enqueue(monkeypatch):
    # The tests run the task body by hand, when they choose, instead of on commit.
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)


@pytest.fixture
def long_answers(preset):
    # demo-coder-34b writes 140 tokens at 90 tokens/s: long enough to stop half-way.
    DecodingPreset.objects.filter(pk=preset.pk).update(max_new_tokens=400)


@pytest.fixture
def slow_pair(make_contender, long_answers):
    return make_contender("demo-coder-34b", "openai"), make_contender("demo-coder-34b", "ollama")


def generations(battle, index=None):
    qs = Generation.objects.filter(turn__battle=battle).order_by("side")
    if index is not None:
        qs = qs.filter(turn__index=index)
    return list(qs)


def run_all(battle):
    for generation in generations(battle):
        generation_run(generation_id=generation.pk)


def _run_then_close(generation_id):
    try:
        generation_run(generation_id=generation_id)
    finally:
        connection.close()  # this thread's own connection


def start_in_background(generation_ids):
    threads = [threading.Thread(target=_run_then_close, args=(pk,)) for pk in generation_ids]
    for thread in threads:
        thread.start()
    return threads


def wait_for_text(generation_ids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(partials.snapshot(partial_name(pk))[0] >= 1 for pk in generation_ids):
            return
        time.sleep(0.01)
    raise AssertionError("no delta was published in time")


def test_stop_mid_stream_keeps_the_text_so_far_and_regenerate_redoes_the_turn(rater, slow_pair, no_enqueue):
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Write a parser for dates.")
    ids = [g.pk for g in generations(battle)]
    threads = start_in_background(ids)
    wait_for_text(ids)
    assert turn_stop(battle=battle, rater=rater) == 2
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()

    stopped = generations(battle)
    for generation in stopped:
        assert generation.status == GenerationStatus.STOPPED
        assert generation.finished_at is not None
        # The stored text is exactly what was published: the snapshot a reconnecting client gets.
        assert generation.text and generation.text == partials.snapshot(partial_name(generation.pk))[1]
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.ACTIVE

    assert turn_stop(battle=battle, rater=rater) == 0  # repeated: harmless
    with pytest.raises(BattleError) as refused:
        vote_cast(battle=battle, rater=rater, winner=Winner.TIE)
    assert refused.value.code == "stopped"
    with pytest.raises(BattleError) as busy:
        turn_submit(battle=battle, rater=rater, prompt="Next one")
    assert busy.value.code == "stopped"

    fresh = turn_regenerate(battle=battle, rater=rater)
    assert {g.pk for g in fresh}.isdisjoint(ids)
    assert not Generation.objects.filter(pk__in=ids).exists()
    assert [g.status for g in generations(battle)] == [GenerationStatus.QUEUED] * 2
    assert battle.turns.count() == 1
    run_all(battle)
    for old, new in zip(stopped, generations(battle)):
        assert new.status == GenerationStatus.DONE
        # Same seed and prompt: the stopped answer was the start of the full one, cut short.
        assert new.text.startswith(old.text) and len(new.text) > len(old.text)
    vote_cast(battle=battle, rater=rater, winner=Winner.MODEL_A)
    with pytest.raises(BattleError) as after_vote:
        turn_regenerate(battle=battle, rater=rater)
    assert after_vote.value.code == "already_voted"
    assert "already has a vote" in after_vote.value.message


def test_stop_before_the_worker_starts_and_the_late_task_does_nothing(rater, make_contender, no_enqueue):
    make_contender("test-quick-1b", "tgi")
    make_contender("test-quick-1b", "ollama")
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Hello there")
    assert turn_stop(battle=battle, rater=rater) == 2
    run_all(battle)  # the tasks arrive after the stop
    for generation in generations(battle):
        assert generation.status == GenerationStatus.STOPPED
        assert generation.attempts == 0 and generation.text == ""


def test_stop_after_both_answers_changes_nothing(rater, make_contender, no_enqueue):
    make_contender("test-quick-1b", "tgi")
    make_contender("test-quick-1b", "ollama")
    battle = battle_start(rater=rater)
    assert turn_stop(battle=battle, rater=rater) == 0  # nothing sent yet
    turn_submit(battle=battle, rater=rater, prompt="Hello there")
    run_all(battle)
    assert turn_stop(battle=battle, rater=rater) == 0
    assert {g.status for g in generations(battle)} == {GenerationStatus.DONE}
    vote_cast(battle=battle, rater=rater, winner=Winner.TIE)
    assert Vote.objects.filter(battle=battle).count() == 1


def test_regenerate_while_streaming_retires_the_old_worker_quietly(rater, slow_pair, no_enqueue):
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Write a parser for dates.")
    old_ids = [g.pk for g in generations(battle)]
    threads = start_in_background(old_ids)
    wait_for_text(old_ids)
    fresh = turn_regenerate(battle=battle, rater=rater)
    for thread in threads:
        thread.join(timeout=30)
    # The old workers found their rows gone: nothing stored, the battle not failed.
    assert not Generation.objects.filter(pk__in=old_ids).exists()
    assert [g.status for g in generations(battle)] == [GenerationStatus.QUEUED] * 2
    assert partials.snapshot(partial_name(fresh[0].pk)) == (0, "")
    run_all(battle)
    assert {g.status for g in generations(battle)} == {GenerationStatus.DONE}
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.ACTIVE


def test_regenerate_refusals(rater, make_contender, django_user_model, no_enqueue):
    make_contender("test-quick-1b", "tgi")
    make_contender("test-quick-1b", "ollama")
    battle = battle_start(rater=rater)
    with pytest.raises(BattleError) as nothing:
        turn_regenerate(battle=battle, rater=rater)
    assert nothing.value.code == "no_turn"
    turn_submit(battle=battle, rater=rater, prompt="Hello there")
    intruder = django_user_model.objects.create_user("intruder-c", password="pw-intruder-1")
    with pytest.raises(BattleError) as foreign:
        turn_regenerate(battle=battle, rater=intruder)
    assert foreign.value.code == "forbidden"
    with pytest.raises(BattleError) as foreign_stop:
        turn_stop(battle=battle, rater=intruder)
    assert foreign_stop.value.code == "forbidden"
    Battle.objects.filter(pk=battle.pk).update(status=BattleStatus.FAILED)
    with pytest.raises(BattleError) as closed:
        turn_regenerate(battle=battle, rater=rater)
    assert closed.value.code == "battle_closed"


def test_named_battles_are_stored_as_not_anonymous(rater, make_contender):
    a = make_contender("test-quick-1b", "tgi")
    b = make_contender("test-quick-1b", "ollama", sampling_weight=0)  # still pickable by name
    off = make_contender("demo-terse-7b", "ollama")
    ArenaModel.objects.filter(pk=off.pk).update(enabled=False)
    battle = battle_start_named(rater=rater, model_a_id=b.pk, model_b_id=a.pk)
    assert battle.anonymous is False and (battle.model_a, battle.model_b) == (b, a)
    for args, code in [((a.pk, a.pk), "same_model"), ((a.pk, off.pk), "unknown_model"),
                       ((a.pk, 10**9), "unknown_model"), ((a.pk, None), "pick_models"), (("1", b.pk), "pick_models")]:
        with pytest.raises(BattleError) as refused:
            battle_start_named(rater=rater, model_a_id=args[0], model_b_id=args[1])
        assert refused.value.code == code
    assert Battle.objects.count() == 1


def test_an_answer_naming_a_contender_flags_the_battle(rater, make_contender, no_enqueue):
    # The emulator talks about the last word of the prompt, so the answer repeats it.
    make_contender("test-quick-1b", "tgi", aliases=["Zephyrine"])
    make_contender("test-quick-1b", "ollama", organisation="Quokka Labs")
    leaked = battle_start(rater=rater)
    turn_submit(battle=leaked, rater=rater, prompt="Tell me about zephyrine")
    run_all(leaked)
    assert "zephyrine" in generations(leaked)[0].text.lower()
    leaked.refresh_from_db()
    assert leaked.identity_leak is True
    vote_cast(battle=leaked, rater=rater, winner=Winner.MODEL_B)  # still votable

    # The prompt names a contender, the answers do not: the prompt is not what is checked.
    clean = battle_start(rater=rater)
    turn_submit(battle=clean, rater=rater, prompt="Is Zephyrine from Quokka Labs nicer than tea?")
    run_all(clean)
    assert all("zephyrine" not in g.text.lower() for g in generations(clean))
    clean.refresh_from_db()
    assert clean.identity_leak is False


def test_stopped_text_is_checked_for_names_too(rater, make_contender, long_answers, no_enqueue):
    make_contender("demo-coder-34b", "openai", aliases=["Marmalade"])
    make_contender("demo-coder-34b", "ollama")
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Write code for marmalade")
    ids = [g.pk for g in generations(battle)]
    threads = start_in_background(ids)
    wait_for_text(ids)
    turn_stop(battle=battle, rater=rater)
    for thread in threads:
        thread.join(timeout=30)
    assert all(g.status == GenerationStatus.STOPPED for g in generations(battle))
    assert "marmalade" in generations(battle)[0].text.lower()  # the code style's first line names the topic
    battle.refresh_from_db()
    assert battle.identity_leak is True


def test_a_stop_the_worker_sees_only_at_the_finish_still_ends_stopped(rater, slow_pair, no_enqueue, monkeypatch):
    # The stop lands between the worker's last check and the end of the stream.
    monkeypatch.setattr("arena.services.generation._StopWatch.check", lambda self: None)
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Write a parser for dates.")
    ids = [g.pk for g in generations(battle)]
    threads = start_in_background(ids)
    wait_for_text(ids)
    turn_stop(battle=battle, rater=rater)
    for thread in threads:
        thread.join(timeout=30)
    for generation in generations(battle):
        assert generation.status == GenerationStatus.STOPPED
        assert generation.text == partials.snapshot(partial_name(generation.pk))[1]
        assert generation.output_tokens is None  # the finish was not stored over the stop
