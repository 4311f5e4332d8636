"""The vote's SQL statements on PostgreSQL: prepared with the process's own pool, never without it."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection

from arena.models import (ArenaModel, BackendServer, Battle, DecodingPreset, Generation, GenerationStatus,
                          HealthStatus, Side, Turn, Vote)
from arena.services.battles import vote_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_battles(django_user_model):
    preset = DecodingPreset.objects.create(name="statements-preset", temperature=0.7, max_new_tokens=64, seed=1)
    contenders = [ArenaModel.objects.create(
        display_name=f"Statements {label}", backend_model_id="tgi", preset=preset, enabled=True,
        server=BackendServer.objects.create(name=f"statements-{label}", kind="tgi", base_url=f"http://127.0.0.1:9/{label}",
                                            health_status=HealthStatus.UP)) for label in "ab"]
    rater = django_user_model.objects.create_user("statements-rater", password="pw-statements-1")

    def make(count):
        battles = []
        for _ in range(count):
            battle = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=contenders[0],
                                           model_b=contenders[1])
            turn = Turn.objects.create(battle=battle, index=1, prompt="Which?")
            for side, contender in ((Side.A, contenders[0]), (Side.B, contenders[1])):
                Generation.objects.create(turn=turn, side=side, contender=contender, status=GenerationStatus.DONE,
                                          text="answer")
            battles.append(battle)
        return rater, battles

    return make


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_vote_statements_are_prepared_on_a_pooled_connection(finished_battles):
    assert getattr(connection, "pool", None) is not None, "the test database is expected to use the pool"
    rater, battles = finished_battles(8)
    for battle in battles:
        vote_cast(battle=battle, rater=rater, winner="tie")
    statements = prepared_statements()
    assert any("FOR UPDATE OF b" in statement for statement in statements)
    assert any(statement.startswith("INSERT INTO") and "arena_vote" in statement for statement in statements)
    assert Vote.objects.count() == 8


def test_nothing_is_prepared_without_the_pool(finished_battles, monkeypatch):
    monkeypatch.setattr("arena.sql.pooled", lambda: False)  # as with DB_POOL_MAX_SIZE=0
    rater, battles = finished_battles(8)
    for battle in battles:
        vote_cast(battle=battle, rater=rater, winner="model_a")
    assert not [s for s in prepared_statements() if "arena_vote" in s or "FOR UPDATE OF b" in s]
    assert Vote.objects.filter(winner="model_a").count() == 8


def test_a_resume_finds_only_the_raters_own_battle_of_the_kind_asked(finished_battles, django_user_model):
    from arena.selectors import battle_for_rater

    rater, (battle,) = finished_battles(1)
    other = django_user_model.objects.create_user("statements-other", password="pw-statements-1")
    found = battle_for_rater(public_id=battle.public_id, rater=rater)
    assert found.pk == battle.pk and found.public_id == battle.public_id and found.status == battle.status
    assert found.model_a.display_name == "Statements a"  # loaded when asked for
    assert battle_for_rater(public_id=battle.public_id, rater=rater, anonymous=True).pk == battle.pk
    assert battle_for_rater(public_id=battle.public_id, rater=rater, anonymous=False) is None
    assert battle_for_rater(public_id=battle.public_id, rater=other) is None
    assert battle_for_rater(public_id=uuid.uuid4(), rater=rater) is None
