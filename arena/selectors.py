"""Reads of the registry."""
from __future__ import annotations

from functools import lru_cache

from django.db.models import QuerySet

from arena.models import ArenaModel, HealthStatus


def contenders_offerable() -> QuerySet[ArenaModel]:
    """Contenders a battle may use: enabled, with weight, on a server whose last check passed."""
    return (
        ArenaModel.objects.filter(enabled=True, sampling_weight__gt=0, server__health_status=HealthStatus.UP)
        .select_related("server", "preset")
    )


def contenders_nameable() -> QuerySet[ArenaModel]:
    """Contenders a viewer may pick by name for a side-by-side battle: enabled, server up.

    Unlike anonymous sampling, a zero sampling weight does not hide a contender here.
    """
    return (ArenaModel.objects.filter(enabled=True, server__health_status=HealthStatus.UP)
            .select_related("server", "preset").order_by("display_name"))


def contender_identity_names() -> list[str]:
    """Every registered contender's display name, organisation and aliases (for leak checks)."""
    from arena.identity import identity_names

    names: list[str] = []
    for display_name, organisation, aliases in ArenaModel.objects.values_list("display_name", "organisation",
                                                                              "aliases"):
        names.extend(identity_names(display_name=display_name, organisation=organisation,
                                    aliases=aliases if isinstance(aliases, list) else ()))
    return names


def battle_for_rater(*, public_id, rater, anonymous: bool | None = None):
    """The rater's own battle, or None (someone else's battle looks exactly like a missing one).

    ``anonymous`` keeps the anonymous and the named page apart: each resumes only its own kind.
    One statement written out once (every resume runs it; building it cost more than running it);
    the contenders are not read with it (only a named battle's state needs them, and loads them).
    """
    from django.db import connection

    from arena.models import Battle

    field = Battle._meta.get_field("public_id")
    params = [field.get_db_prep_value(public_id, connection), rater.pk]
    if anonymous is not None:
        params.append(bool(anonymous))
    found = list(Battle.objects.raw(_battle_for_rater_sql(connection.vendor, anonymous is not None), params))
    return found[0] if found else None


@lru_cache(maxsize=4)
def _battle_for_rater_sql(vendor: str, by_kind: bool) -> str:
    from arena.models import Battle
    from arena.sql import column, table

    kind = f" AND {column(Battle, 'anonymous')} = %s" if by_kind else ""
    return (f"SELECT * FROM {table(Battle)}"
            f" WHERE {column(Battle, 'public_id')} = %s AND {column(Battle, 'rater')} = %s{kind} LIMIT 1")


def current_generation_ids(*, battle) -> dict[str, int | None]:
    """The ids of the last turn's generations by side: the only ones a client follows live."""
    from arena.models import Generation

    ids: dict[str, int | None] = {"a": None, "b": None}
    last = (Generation.objects.filter(turn__battle=battle).order_by("-turn__index")
            .values_list("turn__index", flat=True).first())
    if last is not None:
        ids.update(Generation.objects.filter(turn__battle=battle, turn__index=last).values_list("side", "pk"))
    return ids


def battle_state(*, battle) -> dict:
    """Everything a rater may see of a battle: prompts, answers so far, statuses. Sides are only a/b.

    Answers still streaming come from the live partial record with its sequence number, so the
    client can apply only newer deltas.
    """
    return battle_snapshot(battle=battle)[0]


def battle_snapshot(*, battle, generations=None) -> tuple[dict, dict[str, int | None]]:
    """``battle_state`` and ``current_generation_ids`` from one read of the battle's generations.

    ``generations`` may be given instead of read (an empty list for a battle just created): rows of
    (turn index, prompt, side, generation id, status, finished, text), as ``_answer_rows`` reads them.
    """
    from arena.models import BattleStatus, GenerationStatus
    from arena.services.generation import partial_name
    from workers import partials

    rows = _answer_rows(battle.pk) if generations is None else generations
    turns: dict[int, dict] = {}
    following: dict[str, int | None] = {"a": None, "b": None}
    for index, prompt, side, pk, status, finished, stored_text in rows:  # by turn: the last turn's ids stay
        if index not in turns:
            following = {"a": None, "b": None}
        turn = turns.setdefault(index, {"index": index, "prompt": prompt})
        following[side] = pk
        # A stopped side whose worker has not stored its text yet still has it only in the partial.
        stop_pending = status == GenerationStatus.STOPPED and not finished
        if status in (GenerationStatus.QUEUED, GenerationStatus.STREAMING) or stop_pending:
            seq, text = partials.snapshot(partial_name(pk))
        else:
            seq, text = None, stored_text
        turn[side] = {"status": status, "text": text, "seq": seq}
    all_done = bool(turns) and all(t[s]["status"] == GenerationStatus.DONE for t in turns.values() for s in "ab")
    state = {
        "battle": battle.public_id.hex,
        "status": battle.status,
        "anonymous": battle.anonymous,
        "turns": list(turns.values()),
        "can_vote": battle.status == BattleStatus.ACTIVE and all_done,
    }
    if not battle.anonymous:
        # Named side-by-side mode: the user picked these two, so their names are no secret.
        state["names"] = {"a": battle.model_a.display_name, "b": battle.model_b.display_name}
    return state, following


def battles_of_rater(*, rater, limit: int = 200):
    """The rater's own past battles with their votes; names only where revealed."""
    from arena.models import Battle

    return (Battle.objects.filter(rater=rater).select_related("model_a", "model_b", "vote")
            .prefetch_related("turns").order_by("-created_at")[:limit])


def _answer_rows(battle_id: int) -> list[tuple]:
    """(turn index, prompt, side, generation id, status, finished, text) of a battle, by turn and side.

    One statement written out once (``arena.sql``): every resume and reconnect reads it.
    """
    from django.db import connection

    from arena.sql import execute

    with execute(_answer_rows_sql(connection.vendor), [battle_id]) as cursor:
        return [(index, prompt, side, pk, status, bool(finished), text)
                for index, prompt, side, pk, status, finished, text in cursor.fetchall()]


@lru_cache(maxsize=4)
def _answer_rows_sql(vendor: str) -> str:
    from arena.models import Generation, Turn
    from arena.sql import column, table

    index = column(Turn, "index")
    return (f"SELECT t.{index}, t.{column(Turn, 'prompt')}, g.{column(Generation, 'side')}, g.{column(Generation, 'id')},"
            f" g.{column(Generation, 'status')}, g.{column(Generation, 'finished_at')} IS NOT NULL,"
            f" g.{column(Generation, 'text')}"
            f" FROM {table(Generation)} g JOIN {table(Turn)} t ON t.{column(Turn, 'id')} = g.{column(Generation, 'turn')}"
            f" WHERE t.{column(Turn, 'battle')} = %s ORDER BY t.{index}, g.{column(Generation, 'side')}")

