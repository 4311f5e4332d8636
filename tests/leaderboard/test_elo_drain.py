"""Votes reach online Elo through a debounced drain (PostgreSQL, Redis): one task per window, not per
vote; the batched drain gives exactly the ratings of the per-vote path; no vote is left behind."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connection
from django.utils import timezone

from arena.models import Battle, Generation, GenerationStatus, Turn, Vote, Winner
from arena.services.battles import vote_cast
from leaderboard import services, tasks
from leaderboard.models import EloRating, VoteRecord
from leaderboard.services import elo_catch_up, elo_drain, elo_rebuild, elo_record_vote, leaderboard_refresh
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import STRENGTHS, arena, quick  # noqa: F401 (fixtures)
from tests.leaderboard.test_vote_hook import wait_for

pytestmark = pytest.mark.usefixtures("require_postgres")

# Two raters' votes interleaved across a UTC midnight, so the daily cap restarts inside a batch.
NIGHT = datetime(2026, 3, 2, 23, 40, tzinfo=dt_timezone.utc)


def elo_table() -> dict[tuple[str, str], tuple[float, int]]:
    return {(row.category, row.model_name): (row.rating, row.votes) for row in EloRating.objects.all()}


def varied_votes(arena) -> list[Vote]:
    """Wins, ties and both-bad votes; some not anonymous, leaked, with a failed answer, over a cap,
    or asking a prompt asked before: votes that count for Elo and votes that do not."""
    first, second = arena.user("r1"), arena.user("r2")
    prompts = lambda k: (f"Question number {k % 23}?",)  # noqa: E731 (repeated prompts for de-duplication)
    rows = simulate_votes(STRENGTHS, 160, seed=5, tie_share=0.3)
    stored = arena.votes(rows[:80], rater=first, prompts=prompts, start=NIGHT, step=timedelta(seconds=30))
    stored += arena.votes(rows[80:140], rater=second, prompts=prompts, start=NIGHT + timedelta(seconds=7),
                          step=timedelta(seconds=40))
    stored += arena.votes(rows[140:146], rater=first, anonymous=False, start=NIGHT + timedelta(seconds=11))
    stored += arena.votes(rows[146:152], rater=second, identity_leak=True, start=NIGHT + timedelta(seconds=13))
    stored += arena.votes(rows[152:160], rater=first, generation_status=GenerationStatus.FAILED,
                          start=NIGHT + timedelta(seconds=17))
    assert {v.winner for v in stored} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    return stored


@pytest.mark.django_db
@pytest.mark.parametrize("config", [
    {"LEADERBOARD_RATER_DAILY_CAP": 25},
    {"LEADERBOARD_DEDUPLICATE_PROMPTS": True, "LEADERBOARD_BOTHBAD": "drop"},
    {"LEADERBOARD_RATER_DAILY_CAP": 30, "LEADERBOARD_DEDUPLICATE_PROMPTS": True, "LEADERBOARD_TIES": "drop"},
], ids=["cap", "dedup-bothbad-dropped", "cap-dedup-ties-dropped"])
def test_drain_gives_exactly_the_ratings_of_the_per_vote_path(arena, quick, config, monkeypatch):
    for name, value in config.items():
        setattr(quick, name, value)
    stored = varied_votes(arena)
    in_order = sorted(stored, key=lambda vote: (vote.created_at, vote.pk))

    counted = sum(elo_record_vote(vote=vote) for vote in in_order)
    per_vote = elo_table()
    assert 0 < counted < len(stored)  # some votes do not count: the filters are exercised

    # The same votes, from nothing: no record, no rating, drained in batches smaller than a rater's day.
    EloRating.objects.all().delete()
    VoteRecord.objects.all().delete()
    assert elo_drain(batch_size=7) == len(stored)
    assert elo_table() == per_vote  # exactly: same updates in the same order
    assert not VoteRecord.objects.filter(elo_applied=False).exists()
    assert elo_drain() == 0  # nothing left; a repeated drain changes nothing
    assert elo_table() == per_vote

    # The refresh's catch-up drains too, far beyond the 50 votes it used to replay everything for.
    EloRating.objects.all().delete()
    VoteRecord.objects.update(elo_applied=False)
    monkeypatch.setattr(services, "elo_rebuild", lambda: pytest.fail("catch-up replayed everything"))
    assert elo_catch_up() == len(stored)
    assert elo_table() == per_vote
    monkeypatch.undo()

    # A replay of everything (SQL filters, the engine's OnlineElo) agrees.
    elo_rebuild()
    replayed = elo_table()
    assert replayed.keys() == per_vote.keys()
    for key, (rating, votes) in per_vote.items():
        assert replayed[key][0] == pytest.approx(rating, abs=1e-9) and replayed[key][1] == votes, key


@pytest.mark.django_db
def test_single_vote_update_still_counts_each_vote_once(arena, quick):
    votes = arena.votes([("alpha", "beta", "model_a"), ("beta", "gamma", "tie")], rater=arena.user("r1"))
    assert elo_drain() == 2
    assert elo_record_vote(vote=votes[0]) is False  # already applied by the drain
    assert EloRating.objects.get(category="overall", model_name="beta").votes == 2


# ---------------------------------------------------------------------------------------------- the vote path


def ready_battles(arena, rater, count: int) -> list[Battle]:
    """Battles with both answers finished and no vote yet, as ``vote_cast`` finds them."""
    names = list(STRENGTHS)
    battles = Battle.objects.bulk_create([
        Battle(public_id=uuid.uuid4(), rater=rater, model_a=arena.contender(names[k % 4]),
               model_b=arena.contender(names[(k + 1 + k // 4 % 3) % 4]))
        for k in range(count)])
    turns = Turn.objects.bulk_create([Turn(battle=battle, index=1, prompt=f"Name tea number {k}.")
                                      for k, battle in enumerate(battles)])
    now = timezone.now()
    Generation.objects.bulk_create([
        Generation(turn=turn, side=side, contender=contender, status=GenerationStatus.DONE, text="Green tea.",
                   finished_at=now)
        for turn, battle in zip(turns, battles) for side, contender in (("a", battle.model_a), ("b", battle.model_b))])
    return battles


WINNERS = [Winner.MODEL_A, Winner.MODEL_B, Winner.TIE, Winner.BOTH_BAD]


@pytest.fixture
def drains(monkeypatch):
    """Counts the drain tasks sent to the broker (the messages themselves are not sent)."""
    sent = []
    monkeypatch.setattr(tasks.drain_elo, "apply_async", lambda *args, **kwargs: sent.append(kwargs))
    monkeypatch.setattr(services, "schedule_refresh", lambda **kwargs: True)  # no snapshot work here
    return sent


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_votes_enqueues_one_drain_per_window_and_the_drain_applies_them_all(
        arena, quick, drains, redis_client, settings):
    settings.LEADERBOARD_ELO_DRAIN_SECONDS = 30  # the whole burst falls in one window
    rater = arena.user("burst")
    battles = ready_battles(arena, rater, 120)
    for k, battle in enumerate(battles):
        vote_cast(battle=battle, rater=rater, winner=WINNERS[k % 4])

    assert drains == [{"countdown": 30}]  # one task for 120 votes
    assert 0 < redis_client.pttl(services.ELO_PENDING_KEY) <= 30_000
    assert not VoteRecord.objects.filter(elo_applied=True).exists()  # nothing moved in the web process

    assert tasks.drain_elo() == 120  # the worker runs the task
    assert VoteRecord.objects.filter(elo_applied=True).count() == Vote.objects.count() == 120
    drained = elo_table()
    assert drained[("overall", "alpha")][1] > 0
    # The drain ended the window: the next vote asks for the next drain.
    assert not redis_client.exists(services.ELO_PENDING_KEY)

    # The same votes through the per-vote path, one call each in vote order, give the same ratings.
    EloRating.objects.all().delete()
    VoteRecord.objects.update(elo_applied=False)
    for vote in Vote.objects.order_by("created_at", "pk"):
        elo_record_vote(vote=vote)
    assert elo_table() == drained


@pytest.mark.django_db(transaction=True)
def test_a_short_window_still_sends_far_fewer_tasks_than_votes(arena, quick, drains, redis_client, settings):
    settings.LEADERBOARD_ELO_DRAIN_SECONDS = 0.25
    rater = arena.user("burst")
    battles = ready_battles(arena, rater, 100)
    started = time.monotonic()
    for k, battle in enumerate(battles):
        vote_cast(battle=battle, rater=rater, winner=WINNERS[k % 4])
    windows = (time.monotonic() - started) / 0.25 + 1
    assert 1 <= len(drains) <= windows < 100 / 4
    assert all(kwargs == {"countdown": 0.25} for kwargs in drains)


@pytest.mark.django_db(transaction=True)
def test_votes_of_a_window_this_process_claimed_do_not_ask_redis_again(arena, quick, drains, redis_client,
                                                                       settings, monkeypatch):
    settings.LEADERBOARD_ELO_DRAIN_SECONDS = 30
    asked = []
    claim = services._claim_pending
    monkeypatch.setattr(services, "_claim_pending", lambda *args: asked.append(args) or claim(*args))
    rater = arena.user("busy")
    battles = ready_battles(arena, rater, 41)
    for k, battle in enumerate(battles[:40]):
        vote_cast(battle=battle, rater=rater, winner=WINNERS[k % 4])
    assert len(asked) == 1 and drains == [{"countdown": 30}]

    # Another process claimed the window: this one asks Redis on each vote and enqueues nothing.
    services._elo_claimed_until[0] = 0.0
    vote_cast(battle=battles[40], rater=rater, winner=Winner.TIE)
    assert len(asked) == 2 and len(drains) == 1

    # The drain ends the window (in whichever process runs it), and the next vote claims the next one.
    assert tasks.drain_elo() == 41
    late = ready_battles(arena, rater, 1)[0]
    vote_cast(battle=late, rater=rater, winner=Winner.MODEL_B)
    assert len(asked) == 3 and len(drains) == 2


def vote_in_another_connection(battle: Battle, rater) -> None:
    errors = []

    def cast():
        try:
            vote_cast(battle=battle, rater=rater, winner=Winner.MODEL_B)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=cast)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


@pytest.mark.django_db(transaction=True)
def test_a_vote_cast_while_a_drain_runs_is_applied_by_the_next_window(arena, quick, drains, redis_client,
                                                                       settings, monkeypatch):
    settings.LEADERBOARD_ELO_DRAIN_SECONDS = 30
    rater = arena.user("during")
    early, late = ready_battles(arena, rater, 2)
    vote_cast(battle=early, rater=rater, winner=Winner.MODEL_A)
    assert len(drains) == 1

    apply_records = services._elo_apply_records

    def apply_while_a_vote_commits(records, config):
        if not apply_while_a_vote_commits.done:
            apply_while_a_vote_commits.done = True
            vote_in_another_connection(late, rater)  # commits while this drain holds its batch
        return apply_records(records, config)

    apply_while_a_vote_commits.done = False
    monkeypatch.setattr(services, "_elo_apply_records", apply_while_a_vote_commits)

    assert tasks.drain_elo() == 1  # the first window's drain: the vote it found
    late_vote = Vote.objects.get(battle=late)
    assert not VoteRecord.objects.filter(vote=late_vote, elo_applied=True).exists()
    assert len(drains) == 2  # the late vote opened the next window: it is not left for the periodic refresh

    assert tasks.drain_elo() == 1  # the next window's drain
    assert VoteRecord.objects.get(vote=late_vote).elo_applied
    assert EloRating.objects.get(category="overall", model_name=late.model_b.display_name).votes >= 1


@pytest.mark.django_db(transaction=True)
def test_the_old_per_vote_task_runs_the_drain(arena, quick, drains, redis_client):
    from workers.celery import app

    assert {"leaderboard.record_vote", "leaderboard.drain_elo"} <= set(app.tasks)
    rater = arena.user("old")
    votes = [vote_cast(battle=battle, rater=rater, winner=Winner.TIE) for battle in ready_battles(arena, rater, 3)]
    assert tasks.record_vote(votes[0].pk) == 3  # a message queued by an older release: every pending vote
    assert VoteRecord.objects.filter(elo_applied=True).count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("down", ["redis", "broker"])
def test_with_redis_or_the_broker_down_the_vote_is_stored_and_caught_up_by_the_refresh(
        down, arena, quick, drains, redis_client, settings, monkeypatch, caplog):
    if down == "redis":
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    else:
        def broker_down(*args, **kwargs):
            raise ConnectionError("broker unreachable")

        monkeypatch.setattr(tasks.drain_elo, "apply_async", broker_down)
    rater = arena.user("unlucky")
    battle = ready_battles(arena, rater, 1)[0]
    with caplog.at_level(logging.ERROR, logger="leaderboard.services"):
        vote = vote_cast(battle=battle, rater=rater, winner=Winner.MODEL_A)
    assert "could not schedule the online Elo drain" in caplog.text
    assert Vote.objects.filter(pk=vote.pk, winner=Winner.MODEL_A).exists()  # what the rater gave is kept
    assert not VoteRecord.objects.filter(vote=vote).exists()

    leaderboard_refresh(categories=["overall"])  # the periodic refresh: records the vote, catches Elo up
    assert VoteRecord.objects.get(vote=vote).elo_applied
    winner = EloRating.objects.get(category="overall", model_name=battle.model_a.display_name)
    assert winner.votes == 1 and winner.rating > 1000


# ---------------------------------------------------------------------------------------------- embedded default


@pytest.fixture
def embedded(settings, monkeypatch):
    """No Redis: the window is a lock and a time stamp in this process, the drain runs in its thread pool."""
    from workers import dispatch

    settings.REDIS_URL = None
    settings.GENERATION_IN_PROCESS = True
    settings.LEADERBOARD_ELO_DRAIN_SECONDS = 0.3
    monkeypatch.setattr(services, "_pending_until", {})
    monkeypatch.setattr(services, "schedule_refresh", lambda **kwargs: True)
    started = []
    real_enqueue = dispatch.enqueue
    monkeypatch.setattr(dispatch, "enqueue", lambda task, *args, **kwargs: started.append(task.name) or
                        real_enqueue(task, *args, **kwargs))
    yield started
    wait_for(lambda: services.ELO_PENDING_KEY not in services._pending_until, what="the last window to end")
    if dispatch._executor is not None:
        dispatch._executor.shutdown(wait=True)
        dispatch._executor = None


@pytest.mark.django_db(transaction=True)
def test_embedded_default_debounces_in_process_and_drains_every_vote(arena, quick, embedded):
    rater = arena.user("local")
    battles = ready_battles(arena, rater, 40)
    for k, battle in enumerate(battles[:30]):
        vote_cast(battle=battle, rater=rater, winner=WINNERS[k % 4])
    wait_for(lambda: VoteRecord.objects.filter(elo_applied=True).count() == 30, what="the drain")
    first_burst = len(embedded)
    assert 1 <= first_burst < 30 / 3 and set(embedded) == {"leaderboard.drain_elo"}

    # After the window, the next votes ask for the next drain.
    for k, battle in enumerate(battles[30:]):
        vote_cast(battle=battle, rater=rater, winner=WINNERS[k % 4])
    wait_for(lambda: VoteRecord.objects.filter(elo_applied=True).count() == 40, what="the next drain")
    assert first_burst < len(embedded) < 40 / 3
    assert set(EloRating.objects.filter(category="overall").values_list("model_name", flat=True)) == set(STRENGTHS)
