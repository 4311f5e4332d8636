"""The statements of a vote, written out once as SQL instead of built by the ORM per call.

A vote is a handful of small statements; building each through the query compiler cost more CPU
than PostgreSQL spends running it (two thirds of a vote's time in the web process). These are
the same statements, with table and column names taken from the models, for PostgreSQL (row lock
``FOR UPDATE OF`` the battle) and SQLite (the embedded default, where a write transaction already
excludes every other writer).

They run through ``arena.sql.execute`` (prepared on PostgreSQL with the process's own pool).
Callers run them inside ``transaction.atomic()``; database errors (a second vote's unique
violation) surface as Django's own exceptions, as through the ORM.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from functools import lru_cache

from django.db import connection
from django.utils.dateparse import parse_datetime

from arena.models import ArenaModel, Battle, DecodingPreset, Generation, Turn, Vote
from arena.sql import column as _column
from arena.sql import execute as _execute
from arena.sql import table as _table


@dataclass(frozen=True)
class LockedBattle:
    """What a vote reads from its battle under the row lock."""

    status: str
    revealed_at: datetime | None
    votes_today: int                                   # the rater's votes since the time given
    names: dict[str, tuple[str, str, str]] | None      # side -> (display name, organisation, preset)


@lru_cache(maxsize=8)
def _lock_sql(vendor: str, names: bool) -> str:
    b, v = _table(Battle), _table(Vote)
    sides = ""
    joins = ""
    if names:
        m, p = _table(ArenaModel), _table(DecodingPreset)
        shown = [_column(ArenaModel, "display_name"), _column(ArenaModel, "organisation")]
        for side in ("a", "b"):
            sides += "".join(f", m{side}.{column}" for column in shown) + f", p{side}.{_column(DecodingPreset, 'name')}"
            joins += (f" JOIN {m} m{side} ON m{side}.{_column(ArenaModel, 'id')} = b.{_column(Battle, 'model_' + side)}"
                      f" JOIN {p} p{side} ON p{side}.{_column(DecodingPreset, 'id')} = m{side}.{_column(ArenaModel, 'preset')}")
    lock = " FOR UPDATE OF b" if vendor == "postgresql" else ""
    return (f"SELECT b.{_column(Battle, 'status')}, b.{_column(Battle, 'revealed_at')},"
            f" (SELECT COUNT(*) FROM {v} WHERE {_column(Vote, 'rater')} = %s AND {_column(Vote, 'created_at')} >= %s)"
            f"{sides} FROM {b} b{joins} WHERE b.{_column(Battle, 'id')} = %s{lock}")


@lru_cache(maxsize=4)
def _answers_sql(vendor: str) -> str:
    g, t = _table(Generation), _table(Turn)
    index = _column(Turn, "index")
    fields = ", ".join(f"g.{_column(Generation, name)}" for name in (
        "side", "status", "finished_at", "time_to_first_token_ms", "time_per_output_token_ms"))
    return (f"SELECT t.{index}, {fields} FROM {g} g JOIN {t} t ON t.{_column(Turn, 'id')} = g.{_column(Generation, 'turn')}"
            f" WHERE t.{_column(Turn, 'battle')} = %s ORDER BY t.{index}, g.{_column(Generation, 'side')}")


@lru_cache(maxsize=4)
def _insert_sql(vendor: str) -> str:
    columns = ", ".join(_column(Vote, name) for name in (
        "battle", "rater", "winner", "created_at", "seconds_after_completion"))
    return (f"INSERT INTO {_table(Vote)} ({columns}) VALUES (%s, %s, %s, %s, %s)"
            f" RETURNING {_column(Vote, 'id')}")


@lru_cache(maxsize=4)
def _mark_sql(vendor: str) -> str:
    return (f"UPDATE {_table(Battle)} SET {_column(Battle, 'status')} = %s, {_column(Battle, 'revealed_at')} = %s"
            f" WHERE {_column(Battle, 'id')} = %s")


def _moment(value) -> datetime | None:
    """A stored time as an aware datetime (SQLite hands back text or naive UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    return value


def _param(moment: datetime):
    return connection.ops.adapt_datetimefield_value(moment)


def lock_battle(*, battle_id: int, rater_id: int, votes_since: datetime, names: bool) -> LockedBattle | None:
    """Lock the battle row (PostgreSQL) and read its state; None when the battle is gone."""
    with _execute(_lock_sql(connection.vendor, names), [rater_id, _param(votes_since), battle_id]) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    shown = None
    if names:
        shown = {"a": (row[3], row[4], row[5]), "b": (row[6], row[7], row[8])}
    return LockedBattle(status=row[0], revealed_at=_moment(row[1]), votes_today=int(row[2] or 0), names=shown)


def answers(battle_id: int) -> list[tuple]:
    """(turn index, side, status, finished_at, ttft ms, tpot ms) of every answer, by turn."""
    with _execute(_answers_sql(connection.vendor), [battle_id]) as cursor:
        rows = cursor.fetchall()
    return [(index, side, status, _moment(finished), ttft, tpot) for index, side, status, finished, ttft, tpot in rows]


def insert_vote(*, battle_id: int, rater_id: int, winner: str, created_at: datetime,
                seconds_after_completion: float | None) -> int:
    with _execute(_insert_sql(connection.vendor),
                  [battle_id, rater_id, winner, _param(created_at), seconds_after_completion]) as cursor:
        return cursor.fetchone()[0]


def mark_voted(*, battle_id: int, status: str, revealed_at: datetime) -> None:
    with _execute(_mark_sql(connection.vendor), [status, _param(revealed_at), battle_id]):
        pass
