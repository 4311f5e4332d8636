"""Battle services on PostgreSQL: start, turns, votes (accepted once), reveal."""
from __future__ import annotations


import pytest
from django.utils import timezone

from arena.models import Battle, BattleStatus, Generation, GenerationStatus, Vote, Winner
from arena.services.battles import BattleError, battle_reveal, battle_start, turn_submit, vote_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def rater(django_user_model):
    return django_user_model.objects.create_user("rater-1", password="pw-rater-123")


@pytest.fixture
def two_contenders(make_contender):
    return make_contender("demo-terse-7b", "openai"), make_contender("demo-markdown-13b", "ollama")


def finish_all(battle):
    Generation.objects.filter(turn__battle=battle).update(status=GenerationStatus.DONE, finished_at=timezone.now(),
                                                          text="answer")


def submitted_battle(rater, django_capture_on_commit_callbacks):
    battle = battle_start(rater=rater)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        turn_submit(battle=battle, rater=rater, prompt="Hello?")
    return battle, callbacks


def test_start_needs_two_offerable_contenders(rater, make_contender):
    make_contender("demo-terse-7b", "tgi")
    with pytest.raises(BattleError, match="No battle can start right now"):
        battle_start(rater=rater)


def test_turn_creates_one_generation_per_side_and_enqueues_on_commit(rater, two_contenders,
                                                                     django_capture_on_commit_callbacks):
    battle, callbacks = submitted_battle(rater, django_capture_on_commit_callbacks)
    assert {battle.model_a_id, battle.model_b_id} == {c.pk for c in two_contenders}
    generations = Generation.objects.filter(turn__battle=battle)
    assert sorted(generations.values_list("side", flat=True)) == ["a", "b"]
    assert len(callbacks) == 2  # nothing is enqueued before the transaction commits


@pytest.mark.parametrize("prompt, code", [("", "empty_prompt"), ("   ", "empty_prompt"), ("x" * 9001, "prompt_too_long")])
def test_bad_prompts_are_refused_and_change_nothing(rater, two_contenders, prompt, code, settings):
    settings.ARENA_MAX_PROMPT_CHARS = 9000
    battle = battle_start(rater=rater)
    with pytest.raises(BattleError) as info:
        turn_submit(battle=battle, rater=rater, prompt=prompt)
    assert info.value.code == code
    assert not battle.turns.exists()


def test_next_turn_waits_for_both_answers_and_turn_limit(rater, two_contenders, settings,
                                                          django_capture_on_commit_callbacks):
    settings.ARENA_MAX_TURNS = 2
    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    with pytest.raises(BattleError, match="Wait for both answers"):
        turn_submit(battle=battle, rater=rater, prompt="again")
    finish_all(battle)
    with django_capture_on_commit_callbacks(execute=False):
        turn_submit(battle=battle, rater=rater, prompt="again")
    finish_all(battle)
    with pytest.raises(BattleError, match="limit of 2 turns"):
        turn_submit(battle=battle, rater=rater, prompt="third")


def test_vote_rules(rater, two_contenders, django_user_model, django_capture_on_commit_callbacks):
    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    with pytest.raises(BattleError, match="Wait until both answers are finished"):
        vote_cast(battle=battle, rater=rater, winner=Winner.MODEL_A)
    with pytest.raises(BattleError, match="Names are revealed after the vote"):
        battle_reveal(battle=battle, rater=rater)
    finish_all(battle)
    intruder = django_user_model.objects.create_user("intruder", password="pw-intruder-1")
    with pytest.raises(BattleError, match="belongs to another rater"):
        vote_cast(battle=battle, rater=intruder, winner=Winner.MODEL_A)
    with pytest.raises(BattleError, match="Unknown vote"):
        vote_cast(battle=battle, rater=rater, winner="model_c")
    vote = vote_cast(battle=battle, rater=rater, winner=Winner.BOTH_BAD)
    assert vote.seconds_after_completion is not None and vote.seconds_after_completion >= 0
    with pytest.raises(BattleError, match="already has a vote"):
        vote_cast(battle=battle, rater=rater, winner=Winner.MODEL_B)
    assert Vote.objects.filter(battle=battle).count() == 1
    names = {r.display_name for r in battle_reveal(battle=battle, rater=rater)}
    assert names == {battle.model_a.display_name, battle.model_b.display_name}


def test_failed_battle_cannot_be_voted(rater, two_contenders, django_capture_on_commit_callbacks):
    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    finish_all(battle)
    Battle.objects.filter(pk=battle.pk).update(status=BattleStatus.FAILED)
    with pytest.raises(BattleError, match="cannot be voted on"):
        vote_cast(battle=battle, rater=rater, winner=Winner.TIE)


def test_database_accepts_one_vote_even_without_the_python_check(rater, two_contenders,
                                                                  django_capture_on_commit_callbacks):
    from django.db import IntegrityError, transaction

    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    Vote.objects.create(battle=battle, rater=rater, winner=Winner.TIE)
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(battle=battle, rater=rater, winner=Winner.MODEL_A)


def test_daily_vote_cap(rater, two_contenders, settings, django_capture_on_commit_callbacks):
    settings.ARENA_DAILY_VOTE_CAP = 1
    first, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    finish_all(first)
    vote_cast(battle=first, rater=rater, winner=Winner.TIE)
    second, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    finish_all(second)
    with pytest.raises(BattleError, match="vote limit"):
        vote_cast(battle=second, rater=rater, winner=Winner.TIE)


def test_battle_start_with_turn_is_one_transaction_and_returns_what_a_client_follows(
        rater, two_contenders, settings, django_capture_on_commit_callbacks):
    import uuid

    from arena.services.battles import battle_start_with_turn

    public_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sent = battle_start_with_turn(rater=rater, prompt="Hello?", public_id=public_id)
    battle = Battle.objects.get(public_id=public_id)
    assert sent.turn.battle == battle and sent.turn.index == 1 and sent.turn.prompt == "Hello?"
    stored = dict(Generation.objects.filter(turn__battle=battle).values_list("side", "pk"))
    assert sent.generations == stored and set(stored) == {"a", "b"}
    contenders = {battle.model_a_id: "a", battle.model_b_id: "b"}
    for generation in Generation.objects.filter(turn__battle=battle).select_related("contender__preset"):
        assert contenders[generation.contender_id] == generation.side
        assert generation.decoding_params == generation.contender.preset.params().as_dict()
    assert len(callbacks) == 2

    # A prompt refused by the rate limit starts no battle at all.
    settings.ARENA_PROMPTS_PER_MINUTE = 1
    with pytest.raises(BattleError) as info:
        battle_start_with_turn(rater=rater, prompt="And again?")
    assert info.value.code == "rate_limited"
    assert Battle.objects.filter(rater=rater).count() == 1
    with pytest.raises(BattleError) as info:
        battle_start_with_turn(rater=rater, prompt="  ")
    assert info.value.code == "empty_prompt"


def test_turn_send_returns_the_ids_of_the_generations_it_stored(rater, two_contenders,
                                                              django_capture_on_commit_callbacks):
    from arena.services.battles import turn_send

    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    finish_all(battle)
    with django_capture_on_commit_callbacks(execute=False):
        sent = turn_send(battle=battle, rater=rater, prompt="Next?")
    assert sent.turn.index == 2
    assert sent.generations == dict(Generation.objects.filter(turn=sent.turn).values_list("side", "pk"))


def test_vote_and_reveal_applies_every_vote_rule_and_names_the_last_answers(
        rater, two_contenders, django_user_model, django_capture_on_commit_callbacks):
    from arena.services.battles import turn_send, vote_and_reveal

    battle, _ = submitted_battle(rater, django_capture_on_commit_callbacks)
    with pytest.raises(BattleError) as info:
        vote_and_reveal(battle=battle, rater=rater, winner=Winner.TIE)
    assert info.value.code == "not_finished"
    finish_all(battle)
    with django_capture_on_commit_callbacks(execute=False):
        second = turn_send(battle=battle, rater=rater, prompt="Next?")
    Generation.objects.filter(turn=second.turn).update(status=GenerationStatus.STOPPED)
    with pytest.raises(BattleError) as info:
        vote_and_reveal(battle=battle, rater=rater, winner=Winner.TIE)
    assert info.value.code == "stopped"
    finish_all(battle)
    Generation.objects.filter(pk=second.generations["a"]).update(time_to_first_token_ms=12.5)
    Generation.objects.filter(pk=second.generations["b"]).update(time_to_first_token_ms=34.0)
    intruder = django_user_model.objects.create_user("intruder-2", password="pw-intruder-2")
    with pytest.raises(BattleError, match="belongs to another rater"):
        vote_and_reveal(battle=battle, rater=intruder, winner=Winner.TIE)
    assert not Vote.objects.exists()

    revealed = {r.side: r for r in vote_and_reveal(battle=battle, rater=rater, winner=Winner.MODEL_A)}
    assert revealed["a"].display_name == battle.model_a.display_name
    assert revealed["b"].display_name == battle.model_b.display_name
    assert (revealed["a"].ttft_ms, revealed["b"].ttft_ms) == (12.5, 34.0)  # the last turn's answers
    assert revealed["a"].preset == battle.model_a.preset.name
    assert [(r.side, r.ttft_ms) for r in battle_reveal(battle=battle, rater=rater)] == [("a", 12.5), ("b", 34.0)]
    assert Vote.objects.get(battle=battle).winner == Winner.MODEL_A
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.VOTED
    with pytest.raises(BattleError) as info:
        vote_and_reveal(battle=battle, rater=rater, winner=Winner.MODEL_B)
    assert info.value.code == "already_voted"
