"""A vote moves online Elo within a drain window and brings a new snapshot soon after, through the real queue."""
from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group

from arena.models import Battle, GenerationStatus, Generation
from arena.services.battles import battle_start, turn_submit, vote_cast
from leaderboard.models import EloRating, RatingSnapshot

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def quick_refresh(monkeypatch, settings):
    # Read by this process and by the worker process started after it.
    for name, value in {"LEADERBOARD_REFRESH_DEBOUNCE_SECONDS": "0.3", "LEADERBOARD_BOOTSTRAP_ROUNDS": "20",
                        "LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS": "0", "LEADERBOARD_MIN_VOTES": "1"}.items():
        monkeypatch.setenv(name, value)
        setattr(settings, name, float(value) if "." in value else int(value))


def play_and_vote(rater, winner: str) -> Battle:
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt="Name a tea.")
    wait_for(lambda: Generation.objects.filter(turn__battle=battle, status=GenerationStatus.DONE).count() == 2,
             what="both sides to finish")
    vote_cast(battle=battle, rater=rater, winner=winner)
    return battle


def test_vote_through_the_worker_moves_elo_and_writes_a_snapshot(quick_refresh, redis_client, emulator,
                                                                 celery_worker_process, make_contender,
                                                                 django_user_model):
    make_contender("demo-terse-7b", "tgi", display_name="tea-one")
    make_contender("test-quick-1b", "openai", display_name="tea-two")
    rater = django_user_model.objects.create_user("hook-rater", password="pw-hook-123")
    rater.groups.add(Group.objects.get_or_create(name="rater")[0])

    battle = play_and_vote(rater, "model_a")
    winner, loser = battle.model_a.display_name, battle.model_b.display_name
    elo = wait_for(lambda: dict(EloRating.objects.filter(category="overall").values_list("model_name", "rating"))
                   or None, what="online Elo")
    assert elo[winner] > 1000 > elo[loser]

    snapshot = wait_for(lambda: RatingSnapshot.objects.filter(category="overall", style_control=False).first(),
                        what="a snapshot after the vote")
    assert snapshot.battles == 1
    first = snapshot.pk

    # A second vote, after the debounce window, brings a newer snapshot with both votes.
    time.sleep(0.5)
    play_and_vote(rater, "tie")
    newer = wait_for(lambda: RatingSnapshot.objects.filter(category="overall", style_control=False, pk__gt=first)
                     .first(), what="a second snapshot")
    assert newer.battles == 2
    assert EloRating.objects.get(category="overall", model_name=winner).votes == 2
