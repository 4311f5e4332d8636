"""The claim and the finish of a generation, written out once as SQL instead of built by the ORM per call.

Every answer starts with the claim, on the worker, before the first token can be asked for: the
read of the generation with its turn, battle, contender, server and preset, then the conditional
update that claims it. Building the six-table read through the query compiler cost more CPU than
PostgreSQL spends running both statements. Every answer ends with the conditional update that
stores it and the read of the battle's answers (is every one done?). Same statements, table and column names from the
models, run through ``arena.sql.execute`` (prepared on PostgreSQL with the process's own pool).
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from django.db import connection

from arena.models import ArenaModel, BackendServer, Battle, DecodingPreset, Generation, GenerationStatus, Turn
from arena.sql import ModelColumns
from arena.sql import column as _column
from arena.sql import execute as _execute
from arena.sql import table as _table

_CLAIMED = ModelColumns((Generation, "g"), (Turn, "t"), (Battle, "b"), (ArenaModel, "m"), (BackendServer, "s"),
                        (DecodingPreset, "p"))


@lru_cache(maxsize=4)
def _read_sql(vendor: str) -> str:
    def join(model, alias, on: str) -> str:
        return f" JOIN {_table(model)} {alias} ON {alias}.{_column(model, 'id')} = {on}"

    return (f"SELECT {_CLAIMED.select_list()} FROM {_table(Generation)} g"
            + join(Turn, "t", f"g.{_column(Generation, 'turn')}")
            + join(Battle, "b", f"t.{_column(Turn, 'battle')}")
            + join(ArenaModel, "m", f"g.{_column(Generation, 'contender')}")
            + join(BackendServer, "s", f"m.{_column(ArenaModel, 'server')}")
            + join(DecodingPreset, "p", f"m.{_column(ArenaModel, 'preset')}")
            + f" WHERE g.{_column(Generation, 'id')} = %s AND g.{_column(Generation, 'status')} = %s")


@lru_cache(maxsize=4)
def _claim_sql(vendor: str) -> str:
    status, attempts = _column(Generation, "status"), _column(Generation, "attempts")
    return (f"UPDATE {_table(Generation)} SET {status} = %s, {_column(Generation, 'started_at')} = %s,"
            f" {_column(Generation, 'deadline_at')} = %s, {attempts} = {attempts} + 1"
            f" WHERE {_column(Generation, 'id')} = %s AND {status} = %s")


def queued_generation(generation_id: int) -> Generation | None:
    """The generation if still queued, with its turn, battle, contender, server and preset loaded."""
    with _execute(_read_sql(connection.vendor), [generation_id, GenerationStatus.QUEUED.value]) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    generation, turn, battle, contender, server, preset = _CLAIMED.instances(row)
    turn.battle = battle
    contender.server, contender.preset = server, preset
    generation.turn, generation.contender = turn, contender
    return generation


def mark_claimed(generation_id: int, *, started_at: datetime, deadline_at: datetime) -> bool:
    """Queued -> streaming, with its start and deadline; False if it was not queued any more."""
    adapt = connection.ops.adapt_datetimefield_value
    with _execute(_claim_sql(connection.vendor), [GenerationStatus.STREAMING.value, adapt(started_at),
                                                  adapt(deadline_at), generation_id,
                                                  GenerationStatus.QUEUED.value]) as cursor:
        return cursor.rowcount == 1


@lru_cache(maxsize=4)
def _finish_sql(vendor: str) -> str:
    names = ("status", "text", "finish_reason", "input_tokens", "output_tokens", "time_to_first_token_ms",
             "time_per_output_token_ms", "finished_at")
    status = _column(Generation, "status")
    return (f"UPDATE {_table(Generation)} SET " + ", ".join(f"{_column(Generation, name)} = %s" for name in names)
            + f" WHERE {_column(Generation, 'id')} = %s AND {status} = %s")


@lru_cache(maxsize=4)
def _answers_sql(vendor: str) -> str:
    g, t = _table(Generation), _table(Turn)
    index = _column(Turn, "index")
    return (f"SELECT t.{index}, g.{_column(Generation, 'side')}, g.{_column(Generation, 'id')},"
            f" g.{_column(Generation, 'status')} FROM {g} g"
            f" JOIN {t} t ON t.{_column(Turn, 'id')} = g.{_column(Generation, 'turn')}"
            f" WHERE t.{_column(Turn, 'battle')} = %s ORDER BY t.{index}, g.{_column(Generation, 'side')}")


def mark_finished(generation_id: int, *, text: str, finish_reason: str, input_tokens: int | None,
                  output_tokens: int | None, ttft_ms: float | None, tpot_ms: float | None,
                  finished_at: datetime) -> bool:
    """Streaming -> done, with the answer and its figures; False if it was stopped or replaced meanwhile."""
    with _execute(_finish_sql(connection.vendor), [
            GenerationStatus.DONE.value, text, finish_reason, input_tokens, output_tokens, ttft_ms, tpot_ms,
            connection.ops.adapt_datetimefield_value(finished_at), generation_id,
            GenerationStatus.STREAMING.value]) as cursor:
        return cursor.rowcount == 1


def battle_answers(battle_id: int) -> list[tuple[int, str, int, str]]:
    """(turn index, side, generation id, status) of every answer of the battle, by turn and side."""
    with _execute(_answers_sql(connection.vendor), [battle_id]) as cursor:
        return [tuple(row) for row in cursor.fetchall()]
