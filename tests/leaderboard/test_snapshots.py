"""Snapshots from the database (PostgreSQL): SQL aggregation against the engine, filters, atomicity,
online Elo, debounced refresh."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone as dt_timezone

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from arena.models import (
    ArenaModel, BackendServer, Battle, BattleStatus, DecodingPreset, Generation, GenerationStatus, Turn, Vote,
)
from arena.roles import RATER
from leaderboard import services
from leaderboard.engine import OnlineElo, fit_style_control, rate, style_counts
from leaderboard.models import EloRating, RatingSnapshot, SnapshotRow, SnapshotStatus
from leaderboard.selectors import snapshot_latest
from leaderboard.services import elo_rebuild, elo_record_vote, leaderboard_refresh, schedule_refresh
from tests.leaderboard.conftest import simulate_votes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

STRENGTHS = {"alpha": 1.0, "beta": 0.4, "gamma": 0.0, "delta": -0.5}
BASE_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=dt_timezone.utc)


class Arena:
    """Contenders, raters and voted battles, written in bulk (thousands of votes in well under a second)."""

    def __init__(self, django_user_model):
        self.users = django_user_model
        self.server = BackendServer.objects.create(name="lb-test", kind="openai", base_url="http://127.0.0.1:9")
        self.preset = DecodingPreset.objects.create(name="lb-test")
        self.contenders: dict[str, ArenaModel] = {}

    def contender(self, name: str, **fields) -> ArenaModel:
        if name not in self.contenders:
            self.contenders[name] = ArenaModel.objects.create(
                display_name=name, server=self.server, backend_model_id=name, preset=self.preset, **fields)
        return self.contenders[name]

    def user(self, username: str, role: str | None = RATER, **fields):
        # No password: tests log in with force_login, and hashing one costs a third of a second.
        user = self.users.objects.create_user(username, password=None, **fields)
        if role:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    def votes(self, rows, *, rater, prompts=("What is the capital of France?",), answers=("Paris.", "It is Paris."),
              anonymous=True, identity_leak=False, start=BASE_TIME, step=timedelta(seconds=10),
              generation_status=GenerationStatus.DONE) -> list[Vote]:
        """One voted battle per (model_a, model_b, winner) row, cast ``step`` apart from ``start``.

        ``prompts``/``answers`` may be callables of the row index, for per-battle texts.
        """
        rows = list(rows)
        battles = Battle.objects.bulk_create([
            Battle(public_id=uuid.uuid4(), rater=rater, model_a=self.contender(a), model_b=self.contender(b),
                   anonymous=anonymous, identity_leak=identity_leak, status=BattleStatus.VOTED,
                   revealed_at=start + k * step)
            for k, (a, b, _) in enumerate(rows)])
        turns, owners = [], []
        for k, battle in enumerate(battles):
            texts = prompts(k) if callable(prompts) else prompts
            for index, prompt in enumerate(texts, 1):
                turns.append(Turn(battle=battle, index=index, prompt=prompt))
                owners.append(k)
        turns = Turn.objects.bulk_create(turns)
        generations = []
        for turn, k in zip(turns, owners):
            battle = battles[k]
            pair = answers(k) if callable(answers) else answers
            for side, contender, text in (("a", battle.model_a, pair[0]), ("b", battle.model_b, pair[1])):
                generations.append(Generation(
                    turn=turn, side=side, contender=contender, status=generation_status, text=text,
                    time_to_first_token_ms=100.0 + contender.pk, time_per_output_token_ms=20.0,
                    finished_at=start + k * step))
        Generation.objects.bulk_create(generations)
        votes = Vote.objects.bulk_create([Vote(battle=battle, rater=rater, winner=w)
                                          for battle, (_, _, w) in zip(battles, rows)])
        for k, vote in enumerate(votes):
            vote.created_at = start + k * step
        Vote.objects.bulk_update(votes, ["created_at"])
        return votes


@pytest.fixture
def arena(django_user_model):
    return Arena(django_user_model)


@pytest.fixture
def quick(settings):
    """Small, deterministic settings: few bootstrap rounds, a fixed seed, no cap, no style control."""
    settings.LEADERBOARD_BOOTSTRAP_ROUNDS = 20
    settings.LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = 0
    settings.LEADERBOARD_BOOTSTRAP_SEED = 11
    settings.LEADERBOARD_RATER_DAILY_CAP = 0
    settings.LEADERBOARD_MIN_VOTES = 10
    settings.LEADERBOARD_MIN_CATEGORY_VOTES = 1
    settings.LEADERBOARD_STYLE_CONTROL = False
    settings.LEADERBOARD_SPEED_WINDOW_DAYS = 0  # the test battles are dated in the past
    return settings


def rows_of(snapshot: RatingSnapshot) -> dict[str, SnapshotRow]:
    return {row.model_name: row for row in snapshot.rows.all()}


def assert_matches_engine(snapshot: RatingSnapshot, votes: list[tuple[str, str, str]], *, rounds: int, seed: int):
    expected = rate(votes, bootstrap_rounds=rounds, seed=seed, min_votes=10)
    rows = rows_of(snapshot)
    assert set(rows) == {m.model for m in expected.models}
    for model in expected.models:
        row = rows[model.model]
        assert row.rating == pytest.approx(model.rating, abs=1e-9)
        assert row.ci_lower == pytest.approx(model.ci_lower, abs=1e-9)
        assert row.ci_upper == pytest.approx(model.ci_upper, abs=1e-9)
        assert (row.rank_ub, row.votes, row.provisional) == (model.rank_ub, model.votes, model.provisional)
        assert row.win_rate == pytest.approx(model.win_rate, abs=1e-12)
    assert snapshot.battles == expected.battles
    assert snapshot.matrices["names"] == list(expected.names)
    assert snapshot.matrices["battle_counts"] == expected.battle_counts.tolist()
    return expected


def test_sql_aggregation_equals_the_engine_fed_row_by_row(arena, quick):
    rater = arena.user("r1")
    votes = simulate_votes(STRENGTHS, 1200, seed=3)
    arena.votes(votes, rater=rater)

    report = leaderboard_refresh()

    overall = snapshot_latest(category="overall")
    assert overall is not None and overall in report.written
    assert overall.votes_read == 1200 and overall.status == SnapshotStatus.READY
    expected = assert_matches_engine(overall, votes, rounds=20, seed=11)
    win_fraction = np.array([[np.nan if v is None else v for v in row] for row in overall.matrices["win_fraction"]])
    np.testing.assert_allclose(win_fraction, expected.win_fraction, atol=1e-6)
    # Every vote is English, single-turn, short and not about code: only overall and lang-en.
    assert {s.category for s in report.written} == {"overall", "lang-en"}
    # Online Elo was caught up during the refresh, vote by vote, exactly as the engine does it.
    engine = OnlineElo(k_factor=4.0).update_many(votes)
    rows = rows_of(overall)
    for name, rating in engine.ratings.items():
        assert rows[name].elo == pytest.approx(rating, abs=1e-9)
    assert rows["alpha"].contender == arena.contenders["alpha"]


def test_unchanged_votes_write_no_new_snapshot_and_force_does(arena, quick):
    arena.votes(simulate_votes(STRENGTHS, 200, seed=1), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    again = leaderboard_refresh(categories=["overall"])
    assert again.written == [] and again.unchanged == ["overall"]
    forced = leaderboard_refresh(categories=["overall"], force=True)
    assert len(forced.written) == 1
    assert RatingSnapshot.objects.filter(category="overall").count() == 2


def test_flagged_failed_and_named_battles_do_not_count(arena, quick):
    rater = arena.user("r1")
    counted = simulate_votes(STRENGTHS, 300, seed=4)
    arena.votes(counted, rater=rater)
    # Each of these would flip the order if it counted: gamma beats alpha every time.
    upset = [("gamma", "alpha", "model_a")] * 40
    arena.votes(upset, rater=rater, identity_leak=True)
    arena.votes(upset, rater=rater, anonymous=False)
    failed = arena.votes(upset, rater=rater)
    Generation.objects.filter(turn__battle__vote__in=failed, side="b").update(status=GenerationStatus.FAILED)

    leaderboard_refresh(categories=["overall"])

    snapshot = snapshot_latest(category="overall")
    assert snapshot.votes_read == 300
    assert_matches_engine(snapshot, counted, rounds=20, seed=11)
    counts = snapshot.params["filter_counts"]
    assert (counts["removed_identity_leak"], counts["removed_not_anonymous"], counts["removed_failed"]) == (40, 40, 40)
    assert counts["votes_native"] == 420 and counts["counted_native"] == 300


def test_per_rater_daily_cap_keeps_each_raters_first_votes_of_each_day(arena, quick):
    quick.LEADERBOARD_RATER_DAILY_CAP = 30
    busy, calm = arena.user("busy"), arena.user("calm")
    day_one = simulate_votes(STRENGTHS, 50, seed=1)
    day_two = simulate_votes(STRENGTHS, 50, seed=2)
    calm_votes = simulate_votes(STRENGTHS, 20, seed=3)
    arena.votes(day_one, rater=busy, start=BASE_TIME, step=timedelta(minutes=1))
    arena.votes(day_two, rater=busy, start=BASE_TIME + timedelta(days=1), step=timedelta(minutes=1))
    arena.votes(calm_votes, rater=calm, start=BASE_TIME, step=timedelta(minutes=1))

    leaderboard_refresh(categories=["overall"])

    snapshot = snapshot_latest(category="overall")
    assert snapshot.votes_read == 30 + 30 + 20
    assert_matches_engine(snapshot, day_one[:30] + day_two[:30] + calm_votes, rounds=20, seed=11)
    assert snapshot.params["filter_counts"]["removed_daily_cap"] == 40


def test_prompt_deduplication_keeps_the_first_vote_on_each_prompt(arena, quick):
    quick.LEADERBOARD_DEDUPLICATE_PROMPTS = True
    rater = arena.user("r1")
    votes = simulate_votes(STRENGTHS, 120, seed=6)
    # Prompts repeat every 40 battles (case and spacing aside): only the first 40 votes count.
    arena.votes(votes, rater=rater, prompts=lambda k: (f"Question  number {k % 40}" if k < 80
                                                      else f"question number {k % 40}",))
    leaderboard_refresh(categories=["overall"])
    snapshot = snapshot_latest(category="overall")
    assert snapshot.votes_read == 40 and snapshot.params["filter_counts"]["removed_duplicate_prompt"] == 80
    assert_matches_engine(snapshot, votes[:40], rounds=20, seed=11)


def test_a_snapshot_is_written_whole_or_not_at_all(arena, quick, monkeypatch):
    arena.votes(simulate_votes(STRENGTHS, 200, seed=1), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    before = snapshot_latest(category="overall")
    arena.votes(simulate_votes(STRENGTHS, 50, seed=2), rater=arena.user("r2"))

    from django.db import IntegrityError

    def broken_bulk_create(objs, *args, **kwargs):
        SnapshotRow.objects.create(**{f.name: getattr(objs[0], f.name) for f in SnapshotRow._meta.concrete_fields
                                      if f.name != "id"})  # the first row lands...
        raise IntegrityError("disk full")  # ...then the write fails

    monkeypatch.setattr(SnapshotRow.objects, "bulk_create", broken_bulk_create)
    report = leaderboard_refresh(categories=["overall"])
    monkeypatch.undo()

    assert report.written == [] and report.failed and "disk full" in report.failed[0][1]
    assert snapshot_latest(category="overall") == before  # the previous leaderboard stays current
    failed = RatingSnapshot.objects.get(status=SnapshotStatus.FAILED)
    assert failed.rows.count() == 0 and "disk full" in failed.error
    assert SnapshotRow.objects.exclude(snapshot=before).count() == 0
    # The next refresh writes the snapshot the failed one could not.
    assert len(leaderboard_refresh(categories=["overall"]).written) == 1


def test_elo_hook_matches_the_engine_vote_by_vote_and_counts_each_vote_once(arena, quick):
    rater = arena.user("r1")
    votes = simulate_votes(STRENGTHS, 60, seed=9)
    stored = arena.votes(votes, rater=rater, prompts=(CODING_PROMPT,))
    for vote in stored:
        assert elo_record_vote(vote=vote) is True
    assert elo_record_vote(vote=stored[0]) is False  # a repeated call changes nothing

    engine = OnlineElo(k_factor=4.0).update_many(votes)
    for category in ("overall", "coding", "lang-en"):
        got = dict(EloRating.objects.filter(category=category).values_list("model_name", "rating"))
        assert got == pytest.approx(engine.ratings, abs=1e-9), category
    assert not EloRating.objects.filter(category="multi-turn").exists()

    EloRating.objects.update(rating=0.0)
    assert elo_rebuild() == 60
    rebuilt = dict(EloRating.objects.filter(category="overall").values_list("model_name", "rating"))
    assert rebuilt == pytest.approx(engine.ratings, abs=1e-9)
    votes_of = dict(EloRating.objects.filter(category="overall").values_list("model_name", "votes"))
    assert sum(votes_of.values()) == 2 * 60


def test_elo_hook_skips_votes_that_do_not_count(arena, quick):
    quick.LEADERBOARD_RATER_DAILY_CAP = 2
    rater = arena.user("r1")
    named = arena.votes([("alpha", "beta", "model_a")], rater=rater, anonymous=False)
    counted = arena.votes([("alpha", "beta", "model_a"), ("beta", "gamma", "tie")], rater=rater,
                          start=BASE_TIME + timedelta(hours=1))
    over_cap = arena.votes([("gamma", "alpha", "model_a")], rater=rater, start=BASE_TIME + timedelta(hours=2))
    assert elo_record_vote(vote=named[0]) is False
    assert [elo_record_vote(vote=v) for v in counted] == [True, True]
    assert elo_record_vote(vote=over_cap[0]) is False
    expected = OnlineElo().update_many([("alpha", "beta", "model_a"), ("beta", "gamma", "tie")]).ratings
    got = dict(EloRating.objects.filter(category="overall").values_list("model_name", "rating"))
    assert got == pytest.approx(expected, abs=1e-9)


CODING_PROMPT = "Write a Python function that sorts a list"


def markdown_answer(k: int) -> tuple[str, str]:
    rich = "## Answer\n\n- **one**\n- **two**\n- three\n" + "detail " * (k % 7)
    plain = "One, two, three." + " more" * (k % 5)
    return (rich, plain) if k % 3 else (plain, rich)


def test_style_control_snapshot_equals_the_engine_on_the_same_answers(arena, quick):
    quick.LEADERBOARD_STYLE_CONTROL = True
    quick.LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = 5
    quick.LEADERBOARD_STYLE_REFRESH_SECONDS = 0  # style control inline, with the plain ratings
    rater = arena.user("r1")
    votes = simulate_votes(STRENGTHS, 300, seed=12)
    arena.votes(votes, rater=rater, answers=markdown_answer)

    report = leaderboard_refresh(categories=["overall"])

    assert {(s.category, s.style_control) for s in report.written} == {("overall", False), ("overall", True)}
    styled = snapshot_latest(category="overall", style_control=True)
    counts = [style_counts(*markdown_answer(k)) for k in range(len(votes))]
    expected = fit_style_control([v[0] for v in votes], [v[1] for v in votes], [v[2] for v in votes],
                                 [c[0] for c in counts], [c[1] for c in counts], bootstrap_rounds=5, seed=11)
    rows = rows_of(styled)
    for name, rating in expected.ratings.items():
        assert rows[name].rating == pytest.approx(rating, abs=1e-9)
        assert rows[name].ci_lower == pytest.approx(expected.ci_lower[name], abs=1e-9)
        assert rows[name].votes == sum(name in v[:2] for v in votes)
    assert styled.style["coefficients"] == pytest.approx(expected.coefficients)
    assert [r.model_name for r in styled.rows.all()] == sorted(expected.ratings, key=lambda n: -expected.ratings[n])


def test_refresh_task_and_command_write_snapshots(arena, quick):
    from io import StringIO

    from leaderboard.tasks import refresh

    arena.votes(simulate_votes(STRENGTHS, 150, seed=1), rater=arena.user("r1"))
    summary = refresh(categories=["overall"])
    assert summary["written"] == ["overall"]

    out = StringIO()
    call_command("refresh_leaderboard", "--bootstrap", "5", "--category", "overall", "--force", stdout=out)
    assert "overall" in out.getvalue() and RatingSnapshot.objects.count() == 2
    assert RatingSnapshot.objects.order_by("-id").first().params["bootstrap_rounds"] == 5
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown category"):
        call_command("refresh_leaderboard", "--category", "everything", stdout=StringIO())


def test_schedule_refresh_enqueues_once_per_window(redis_client, settings):
    settings.LEADERBOARD_REFRESH_DEBOUNCE_SECONDS = 30
    queued = redis_client.llen("ratings")  # refreshes have their own queue
    assert schedule_refresh() is True
    assert schedule_refresh() is False  # one already pending
    assert redis_client.llen("ratings") == queued + 1
    ttl = redis_client.pttl(services.PENDING_KEY)
    assert 0 < ttl <= 30_000
    redis_client.delete(services.PENDING_KEY)  # the window is over
    assert schedule_refresh() is True


def test_schedule_refresh_without_redis_uses_an_in_process_mark(settings, monkeypatch, redis_client):
    # Only the pending mark moves into the process; the task still goes to the broker.
    settings.REDIS_URL = None
    monkeypatch.setattr(services, "_pending_until", {})
    queued = redis_client.llen("ratings")
    assert schedule_refresh(countdown=60) is True
    assert schedule_refresh(countdown=60) is False
    assert redis_client.llen("ratings") == queued + 1
    assert not redis_client.exists(services.PENDING_KEY)
