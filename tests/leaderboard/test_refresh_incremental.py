"""The cheap paths of a refresh (PostgreSQL): the input version that says "nothing new", the kept
tallies moved vote by vote, the style-control snapshots in their own task. Each must notice every
change ratings depend on."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from arena.models import Battle
from leaderboard import categories as cats
from leaderboard import services
from leaderboard.models import InputVersion, RatingSnapshot, TallyState, VoteTally
from leaderboard.selectors import LeaderboardSettings, snapshot_latest, tallied_vote_cells, vote_cells
from leaderboard.services import leaderboard_refresh, tally_update
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import BASE_TIME, STRENGTHS, arena, assert_matches_engine, quick  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]


def version() -> int:
    return InputVersion.objects.get(pk=1).version


@pytest.fixture
def no_rating(monkeypatch):
    """Make any refresh that reads votes fail loudly: only the cheap path may run."""
    def refuse(*args, **kwargs):
        raise AssertionError("the refresh read the votes although nothing changed")

    def install():
        monkeypatch.setattr(services, "tally_update", refuse)
        monkeypatch.setattr(services, "vote_cells", refuse)
        monkeypatch.setattr(services, "style_rows", refuse)
    return install


def test_nothing_new_returns_before_reading_any_vote(arena, quick, no_rating):
    arena.votes(simulate_votes(STRENGTHS, 300, seed=1), rater=arena.user("r1"))
    first = leaderboard_refresh()
    assert {s.category for s in first.written} == {"overall", "lang-en"}
    no_rating()
    again = leaderboard_refresh()
    assert again.written == [] and sorted(again.unchanged) == ["lang-en", "overall"]


def test_a_new_vote_is_rated(arena, quick):
    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 300, seed=1), rater=rater)
    leaderboard_refresh(categories=["overall"])
    before = version()
    arena.votes([("delta", "alpha", "model_a")], rater=rater, start=BASE_TIME + timedelta(days=3))
    report = leaderboard_refresh(categories=["overall"])
    assert version() > before
    assert [s.category for s in report.written] == ["overall"]
    assert snapshot_latest(category="overall").votes_read == 301


def test_an_identity_leak_flagged_after_the_vote_is_rated(arena, quick):
    rater = arena.user("r1")
    counted = simulate_votes(STRENGTHS, 300, seed=4)
    arena.votes(counted, rater=rater)
    upset = arena.votes([("gamma", "alpha", "model_a")] * 30, rater=rater, start=BASE_TIME + timedelta(days=1))
    leaderboard_refresh(categories=["overall"])
    assert snapshot_latest(category="overall").votes_read == 330

    # As the generation service flags it: a queryset update, no signal.
    Battle.objects.filter(vote__in=upset, identity_leak=False).update(identity_leak=True)
    report = leaderboard_refresh(categories=["overall"])
    assert [s.category for s in report.written] == ["overall"]
    snapshot = snapshot_latest(category="overall")
    assert snapshot.votes_read == 300 and snapshot.params["filter_counts"]["removed_identity_leak"] == 30
    assert_matches_engine(snapshot, counted, rounds=20, seed=11)

    # Cleared again: the votes count again.
    Battle.objects.filter(vote__in=upset).update(identity_leak=False)
    leaderboard_refresh(categories=["overall"])
    assert snapshot_latest(category="overall").votes_read == 330


def test_a_status_update_that_leaves_the_flag_alone_changes_nothing(arena, quick, no_rating):
    votes = arena.votes(simulate_votes(STRENGTHS, 200, seed=2), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    before = version()
    Battle.objects.filter(vote__in=votes[:10]).update(identity_leak=False, status="voted")
    assert version() == before
    no_rating()
    assert leaderboard_refresh(categories=["overall"]).unchanged == ["overall"]


@pytest.mark.parametrize("setting, value", [("LEADERBOARD_MIN_VOTES", 5), ("LEADERBOARD_BOOTSTRAP_ROUNDS", 7),
                                            ("LEADERBOARD_RATER_DAILY_CAP", 100), ("LEADERBOARD_TIES", "drop")])
def test_a_setting_change_is_rated(arena, quick, setting, value):
    arena.votes(simulate_votes(STRENGTHS, 200, seed=3), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    setattr(quick, setting, value)
    report = leaderboard_refresh(categories=["overall"])
    assert [s.category for s in report.written] == ["overall"]


def test_a_renamed_contender_and_a_deleted_battle_are_rated(arena, quick):
    votes = arena.votes(simulate_votes(STRENGTHS, 200, seed=5), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    arena.contenders["beta"].display_name = "beta-2"
    arena.contenders["beta"].save(update_fields=["display_name"])
    leaderboard_refresh(categories=["overall"])
    assert "beta-2" in snapshot_latest(category="overall").matrices["names"]

    Battle.objects.filter(vote=votes[0]).delete()
    assert TallyState.objects.get(pk=1).stale
    leaderboard_refresh(categories=["overall"])
    assert snapshot_latest(category="overall").votes_read == 199
    assert not TallyState.objects.get(pk=1).stale


def test_deleting_the_latest_snapshot_brings_it_back(arena, quick):
    arena.votes(simulate_votes(STRENGTHS, 200, seed=6), rater=arena.user("r1"))
    leaderboard_refresh(categories=["overall"])
    snapshot_latest(category="overall").delete()
    assert len(leaderboard_refresh(categories=["overall"]).written) == 1


def assert_tallies_equal_a_full_read(config: LeaderboardSettings) -> dict:
    services.vote_records_fill()
    state = tally_update(config=config)
    kept = tallied_vote_cells(config=config, status_counts=state.status_counts)
    full = vote_cells(config=config)
    assert kept.votes_per_category() == {c: n for c, n in full.votes_per_category().items()
                                         if n or c in cats.FIXED_CATEGORIES}
    for category, n in full.votes_per_category().items():
        if not n:
            continue
        got, want = kept.outcomes(category), full.outcomes(category)
        assert got.names == want.names, category
        for name in ("first", "second", "wins_first", "wins_second", "ties", "bothbad"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{category} {name}")
    assert kept.stats == full.stats
    return kept.stats


def test_kept_tallies_follow_every_change_exactly(arena, quick):
    """Votes out of time order across the daily cap, repeated prompts, flags set and cleared: after
    each step the kept tallies equal a full read of the votes."""
    quick.LEADERBOARD_RATER_DAILY_CAP = 5
    quick.LEADERBOARD_DEDUPLICATE_PROMPTS = True
    config = LeaderboardSettings.load()
    busy, calm = arena.user("busy"), arena.user("calm")
    prompts = lambda k: (f"prompt {k % 7}",)  # noqa: E731 - repeats across battles and raters
    coding = lambda k: ("Write a Python function that sorts a list",) if k % 2 else (f"question {k}",)  # noqa: E731
    arena.votes(simulate_votes(STRENGTHS, 8, seed=1), rater=busy, prompts=prompts,
                start=BASE_TIME + timedelta(hours=2), step=timedelta(minutes=5))
    stats = assert_tallies_equal_a_full_read(config)
    assert (stats["counted_native"], stats["removed_daily_cap"], stats["removed_duplicate_prompt"]) == (5, 3, 0)
    # Earlier the same day: these push the day's later votes over the cap.
    early = arena.votes(simulate_votes(STRENGTHS, 4, seed=2), rater=busy, prompts=prompts,
                        start=BASE_TIME, step=timedelta(minutes=5))
    stats = assert_tallies_equal_a_full_read(config)
    assert (stats["removed_daily_cap"], stats["removed_duplicate_prompt"]) == (7, 1)
    arena.votes(simulate_votes(STRENGTHS, 12, seed=3), rater=calm, prompts=coding,
                start=BASE_TIME + timedelta(days=1))
    arena.votes(simulate_votes(STRENGTHS, 3, seed=4), rater=calm, anonymous=False)
    assert_tallies_equal_a_full_read(config)
    # A flagged early vote frees a place under the cap and un-duplicates a prompt.
    Battle.objects.filter(vote__in=early[:2]).update(identity_leak=True)
    stats = assert_tallies_equal_a_full_read(config)
    assert stats["removed_identity_leak"] == 2
    Battle.objects.filter(vote=early[0]).update(identity_leak=False)
    assert_tallies_equal_a_full_read(config)
    assert VoteTally.objects.exists()
    # Another cap: built again, and still equal.
    quick.LEADERBOARD_RATER_DAILY_CAP = 2
    assert_tallies_equal_a_full_read(LeaderboardSettings.load())


def test_style_control_runs_in_its_own_task(arena, quick, monkeypatch, no_rating):
    from tests.leaderboard.test_snapshots import markdown_answer

    quick.LEADERBOARD_STYLE_CONTROL = True
    quick.LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = 3
    quick.LEADERBOARD_STYLE_REFRESH_SECONDS = 600
    asked = []
    monkeypatch.setattr(services, "schedule_refresh", lambda **kwargs: asked.append(kwargs) or True)
    arena.votes(simulate_votes(STRENGTHS, 300, seed=12), rater=arena.user("r1"), answers=markdown_answer)

    plain = leaderboard_refresh(categories=["overall"])
    assert [(s.category, s.style_control) for s in plain.written] == [("overall", False)]
    assert asked == [{"style": True}]
    assert not RatingSnapshot.objects.filter(style_control=True).exists()

    from leaderboard.tasks import refresh_style

    summary = refresh_style()
    assert summary["written"] == ["overall (style)", "lang-en (style)"] or set(summary["written"]) == {
        "overall (style)", "lang-en (style)"}
    assert snapshot_latest(category="overall", style_control=True).votes_read == 300
    # Nothing new for either: neither reads a vote.
    no_rating()
    assert refresh_style()["unchanged"]
    assert leaderboard_refresh(categories=["overall"]).unchanged == ["overall"]


def test_speed_medians_are_reused_while_young_and_read_again_after(arena, quick):
    from arena.models import Generation

    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 200, seed=7), rater=rater)
    leaderboard_refresh(categories=["overall"])
    alpha = arena.contenders["alpha"]
    first = snapshot_latest(category="overall").rows.get(model_name="alpha").median_ttft_ms
    assert first == pytest.approx(100.0 + alpha.pk)
    Generation.objects.filter(contender=alpha).update(time_to_first_token_ms=5000.0)

    arena.votes([("alpha", "beta", "model_a")], rater=rater, start=BASE_TIME + timedelta(days=2))
    quick.LEADERBOARD_SPEED_REUSE_SECONDS = 600
    leaderboard_refresh(categories=["overall"])
    assert snapshot_latest(category="overall").rows.get(model_name="alpha").median_ttft_ms == first

    arena.votes([("alpha", "gamma", "model_a")], rater=rater, start=BASE_TIME + timedelta(days=2, hours=1))
    quick.LEADERBOARD_SPEED_REUSE_SECONDS = 0
    leaderboard_refresh(categories=["overall"])
    assert snapshot_latest(category="overall").rows.get(model_name="alpha").median_ttft_ms == 5000.0


def test_style_rows_through_the_kept_statuses_equal_a_full_read(arena, quick):
    from leaderboard.selectors import style_rows
    from tests.leaderboard.test_snapshots import markdown_answer

    quick.LEADERBOARD_RATER_DAILY_CAP = 40
    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 60, seed=8), rater=rater, answers=markdown_answer,
                prompts=lambda k: ("Write a Python function that sorts a list",) if k % 3 else (f"Hallo, wie geht es "
                                                                                              f"dir heute {k}?",))
    arena.votes(simulate_votes(STRENGTHS, 5, seed=9), rater=rater, identity_leak=True)
    config = LeaderboardSettings.load()
    services.vote_records_fill()
    tally_update(config=config)
    kept, full = style_rows(config=config, tallied=True), style_rows(config=config)
    assert kept.without_style == full.without_style
    assert len(kept.model_a) == 40
    for category in ("overall", "coding", "lang-de", "lang-en", "multi-turn"):
        got = sorted(zip(*[list(map(str, x)) for x in kept.select(category)[:3]],
                         map(tuple, kept.select(category)[3]), map(tuple, kept.select(category)[4])))
        want = sorted(zip(*[list(map(str, x)) for x in full.select(category)[:3]],
                          map(tuple, full.select(category)[3]), map(tuple, full.select(category)[4])))
        assert got == want, category


def test_rows_loaded_with_triggers_off_are_counted_after_rebuild_tallies(arena, quick):
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 100, seed=10), rater=rater)
    leaderboard_refresh(categories=["overall"])
    with connection.cursor() as cursor:  # as a restore would load them
        cursor.execute("SET LOCAL session_replication_role = replica")
        arena.votes(simulate_votes(STRENGTHS, 20, seed=11), rater=rater, start=BASE_TIME + timedelta(days=1))
        services.vote_records_fill()
        cursor.execute("SET LOCAL session_replication_role = origin")
    assert leaderboard_refresh(categories=["overall"]).unchanged == ["overall"]  # the triggers saw nothing
    call_command("refresh_leaderboard", "--rebuild-tallies", "--no-style", "--category", "overall", stdout=StringIO())
    assert snapshot_latest(category="overall").votes_read == 120
