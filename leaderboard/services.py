"""Writes for the leaderboard: vote records, online Elo, rating snapshots, debounced refresh,
battle export and import.

Snapshots: ``leaderboard_refresh`` reads the counted votes per category and pair, rates every
category with the engine and writes one snapshot per category and variant (plain, style control),
each with all its rows in one transaction. A category whose input and parameters have not changed
since its latest snapshot gets no new one. On PostgreSQL triggers move an input version on every
change ratings depend on and queue the battles concerned: a refresh with nothing new stops after
reading that counter, and the counts per category and pair are kept in tallies that a refresh
moves by the queued battles' groups only (built whole the first time and after a filter setting
changed or a vote record was changed or removed). Style-control snapshots run in their own task
unless LEADERBOARD_STYLE_REFRESH_SECONDS is 0.

Online Elo: a committed vote asks for a drain (``schedule_elo_drain``: one Redis ``SET NX`` per
vote, one task per LEADERBOARD_ELO_DRAIN_SECONDS window); ``elo_drain`` then moves the Elo of both
models in every category of each vote not applied yet, oldest first, in batches. ``elo_record_vote``
does the same for one vote (a repeated call is harmless); ``elo_rebuild`` replays all counted votes.
"""
from __future__ import annotations

import csv
import hashlib
import heapq
import hmac
import json
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, TruncDay
from django.utils import timezone

from arena.models import ArenaModel, Battle, BattleStatus, Generation, GenerationStatus, Turn, Vote
from leaderboard import categories as cats, rating_pool
from leaderboard.battle_files import FORMATS, BattleFileError, detect_format
from leaderboard.engine import (
    ConvergenceError, DegenerateDataError, OnlineElo, RatingScale, TiePolicy, answer_style, fit_style_control, rate,
)
from leaderboard.engine.outcomes import check_vote
from leaderboard.engine.ranking import battle_count_matrix, predicted_win_matrix, rank_upper_bound, win_fraction_matrix
from leaderboard.engine.provisional import provisional_flags
from leaderboard.models import (
    EloRating, ImportedBattle, InputVersion, RatingSnapshot, RefreshMark, SnapshotRow, SnapshotStatus, TallyState,
    VoteRecord,
)
from leaderboard.selectors import (
    STATUS_CODES, CategoryTallies, LeaderboardSettings, StyleRows, VoteCells, _records_sql, _tune_for_aggregation,
    category_sql, counted_imported, counted_record_rows, eligible_records, outcomes_from_arrays, snapshot_latest,
    speed_medians, speed_window_start, style_rows, tally_config, tallied_vote_cells, vote_cells,
)

log = logging.getLogger(__name__)

# Advisory lock keys (PostgreSQL): Elo updates are serialised so that a rebuild, a drain and a
# single vote's update never interleave; refreshes do not overlap.
_ELO_LOCK = 7_311_001
_REFRESH_LOCK = 7_311_002


# --------------------------------------------------------------------------------------------------
# Vote records


def _style_of(texts: list[str]) -> list[int]:
    total = np.zeros(4)
    for text in texts:
        total += answer_style(text)
    return [int(v) for v in total]


def _compute_records(vote_ids: list[int]) -> list[VoteRecord]:
    votes = list(Vote.objects.filter(pk__in=vote_ids).values_list(
        "pk", "battle_id", "rater_id", "winner", "created_at", "battle__model_a_id", "battle__model_b_id",
        "battle__anonymous"))
    battle_ids = [vote[1] for vote in votes]
    prompts: dict[int, list[str]] = defaultdict(list)
    for battle_id, prompt in (Turn.objects.filter(battle_id__in=battle_ids).order_by("battle_id", "index")
                              .values_list("battle_id", "prompt")):
        prompts[battle_id].append(prompt)
    answers: dict[tuple[int, str], list[str]] = defaultdict(list)
    failed: set[int] = set()
    for battle_id, side, status, text in (Generation.objects.filter(turn__battle_id__in=battle_ids)
                                          .order_by("turn__index")
                                          .values_list("turn__battle_id", "side", "status", "text")):
        if status == GenerationStatus.DONE:
            answers[(battle_id, side)].append(text)
        elif status == GenerationStatus.FAILED:
            failed.add(battle_id)
    records = []
    for vote_id, battle_id, rater_id, winner, voted_at, model_a_id, model_b_id, anonymous in votes:
        tags = cats.tag_prompts(prompts.get(battle_id, []))
        has_both = (battle_id, "a") in answers and (battle_id, "b") in answers
        records.append(VoteRecord(
            battle_id=battle_id, vote_id=vote_id, rater_id=rater_id, model_a_id=model_a_id, model_b_id=model_b_id,
            winner=winner, voted_at=voted_at, anonymous=anonymous, failed=battle_id in failed,
            language=tags.language, is_coding=tags.is_coding, prompt_chars=tags.prompt_chars, turns=tags.turns,
            prompt_hash=tags.prompt_hash,
            style_a=_style_of(answers[(battle_id, "a")]) if has_both else None,
            style_b=_style_of(answers[(battle_id, "b")]) if has_both else None,
        ))
    return records


# Votes commit in about id order; looking back this far from the newest record catches any that
# committed after a higher id without scanning every vote on each refresh.
_RECORD_LOOKBACK = 10_000


def vote_records_fill(*, full: bool = False, chunk: int = 1000) -> int:
    """Record every vote not recorded yet; returns how many were recorded.

    By default only votes near and after the newest record are looked at (cheap at millions of
    votes); ``full`` checks them all.
    """
    newest = VoteRecord.objects.aggregate(newest=Max("vote_id"))["newest"]
    missing = Vote.objects.filter(leaderboard_record__isnull=True)
    if newest is not None and not full:
        missing = missing.filter(pk__gt=newest - _RECORD_LOOKBACK)
    recorded = 0
    after = 0
    while True:
        ids = list(missing.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            return recorded
        VoteRecord.objects.bulk_create(_compute_records(ids), ignore_conflicts=True)
        recorded += len(ids)
        after = ids[-1]


# --------------------------------------------------------------------------------------------------
# Online Elo


def _advisory_xact_lock(key: int) -> None:
    # SQLite (the embedded default) serialises writers on its own.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _rating_scale(config: LeaderboardSettings) -> RatingScale:
    return RatingScale(config.scale, config.base, config.initial)


def _counted_for_elo(records: list[VoteRecord], config: LeaderboardSettings) -> set[int]:
    """The vote ids among ``records`` that count for Elo: the same filters as the refresh, judged
    when the votes arrive, in one query for the whole list.

    Each record is judged against the eligible records cast before it (by voted_at, then vote_id),
    whether or not those were applied yet, so the answer does not depend on how votes are batched.
    """
    if not records:
        return set()
    eligible = eligible_records().filter(pk__in=[record.pk for record in records]).order_by()
    earlier = Q(voted_at__lt=OuterRef("voted_at")) | Q(voted_at=OuterRef("voted_at"), vote_id__lt=OuterRef("vote_id"))
    columns = ["vote_id"]
    if config.rater_daily_cap > 0:
        # Eligible votes of the same rater earlier on the same UTC day.
        same_day = (eligible_records().filter(earlier, rater_id=OuterRef("rater_id"), voted_at__gte=OuterRef("day"))
                    .order_by().values("rater_id").annotate(n=Count("pk")).values("n"))
        eligible = eligible.annotate(day=TruncDay("voted_at", tzinfo=dt_timezone.utc),
                                     earlier_that_day=Coalesce(Subquery(same_day), 0))
        columns.append("earlier_that_day")
    if config.deduplicate_prompts:
        eligible = eligible.annotate(repeated=Exists(eligible_records().filter(earlier, prompt_hash=OuterRef("prompt_hash"))))
        columns += ["prompt_hash", "repeated"]
    counted = set()
    for row in eligible.values(*columns):
        if config.rater_daily_cap > 0 and row["earlier_that_day"] >= config.rater_daily_cap:
            continue
        if config.deduplicate_prompts and row["prompt_hash"] and row["repeated"]:
            continue
        counted.add(row["vote_id"])
    return counted


@dataclass
class _EloMove:
    """One counted vote as online Elo applies it."""

    categories: list[str]
    name_a: str
    name_b: str
    contender_a: int | None
    contender_b: int | None
    score_a: float


def _elo_apply(moves: list[_EloMove], config: LeaderboardSettings) -> None:
    """Move the Elo of both models of each vote, in the order given, in every category of the vote.

    The rows concerned are read once, moved in memory vote after vote and written back once, so a
    batch of votes costs the same few queries as one vote.
    """
    contenders: dict[tuple[str, str], int | None] = {}
    for move in moves:
        for category in move.categories:
            contenders[(category, move.name_a)] = move.contender_a
            contenders[(category, move.name_b)] = move.contender_b
    if not contenders:
        return

    def load() -> dict[tuple[str, str], EloRating]:
        found = EloRating.objects.filter(category__in={key[0] for key in contenders},
                                         model_name__in={key[1] for key in contenders})
        return {(row.category, row.model_name): row for row in found if (row.category, row.model_name) in contenders}

    rows = load()
    if len(rows) < len(contenders):
        EloRating.objects.bulk_create(
            [EloRating(category=category, model_name=name, contender_id=contender, rating=config.initial)
             for (category, name), contender in contenders.items() if (category, name) not in rows],
            ignore_conflicts=True,
        )
        rows = load()
    scale = _rating_scale(config)
    now = timezone.now()
    for move in moves:
        for category in move.categories:
            row_a, row_b = rows[(category, move.name_a)], rows[(category, move.name_b)]
            # The engine's OnlineElo update, term for term, so that replaying gives the same numbers.
            expected_a = 1.0 / (1.0 + scale.base ** ((row_b.rating - row_a.rating) / scale.scale))
            delta = config.elo_k * (move.score_a - expected_a)
            row_a.rating += delta
            row_b.rating -= delta
            row_a.votes += 1
            row_b.votes += 1
    for row in rows.values():
        row.updated_at = now
    EloRating.objects.bulk_update(list(rows.values()), ["rating", "votes", "updated_at"], batch_size=500)


def _elo_apply_records(records: list[VoteRecord], config: LeaderboardSettings) -> set[int]:
    """Apply online Elo for records not applied yet, in the order given, and mark them applied.

    Call it inside a transaction holding the Elo lock, with ``model_a`` and ``model_b`` selected
    along. Returns the vote ids that counted.
    """
    policy = TiePolicy(config.ties, config.bothbad)
    scores = {record.vote_id: policy.score_of_a(record.winner) for record in records}
    counted = _counted_for_elo([record for record in records if scores[record.vote_id] is not None], config)
    moves = [
        _EloMove(
            categories=cats.categories_of(language=record.language, is_coding=record.is_coding,
                                          prompt_chars=record.prompt_chars, turns=record.turns,
                                          long_prompt_chars=config.long_prompt_chars),
            name_a=record.model_a.display_name, name_b=record.model_b.display_name,
            contender_a=record.model_a_id, contender_b=record.model_b_id, score_a=scores[record.vote_id],
        )
        for record in records if record.vote_id in counted
    ]
    _elo_apply(moves, config)
    VoteRecord.objects.filter(pk__in=[record.pk for record in records]).update(elo_applied=True)
    return counted


def elo_record_vote(*, vote: Vote) -> bool:
    """Update online Elo for one vote; True when the vote counted.

    Call it once the vote is committed. Calling it again for the same vote changes nothing, and a
    vote it never saw is picked up by the next drain or refresh. Votes usually reach Elo through
    ``elo_drain`` instead, many at a time.
    """
    config = LeaderboardSettings.load()
    with transaction.atomic():
        _advisory_xact_lock(_ELO_LOCK)
        if not VoteRecord.objects.filter(vote_id=vote.pk).exists():
            VoteRecord.objects.bulk_create(_compute_records([vote.pk]), ignore_conflicts=True)
        record = (VoteRecord.objects.select_for_update(of=("self",)).select_related("model_a", "model_b")
                  .get(vote_id=vote.pk))
        if record.elo_applied:
            return False
        return vote.pk in _elo_apply_records([record], config)


ELO_DRAIN_BATCH = 500


def elo_drain(*, batch_size: int = ELO_DRAIN_BATCH, fill: bool = True) -> int:
    """Apply online Elo for every committed vote not applied yet, oldest first (voted_at, vote_id).

    Votes without a record get one first (``fill``). Then ``batch_size`` votes at a time, each batch
    in its own transaction under the Elo lock: the ratings are exactly those of ``elo_record_vote``
    called once per vote in that order, for a few queries per batch. Returns the votes applied
    (counted or not). Running it twice at once, or again, is harmless: each vote is applied once.
    """
    config = LeaderboardSettings.load()
    if fill:
        vote_records_fill()
    applied = 0
    while True:
        with transaction.atomic():
            _advisory_xact_lock(_ELO_LOCK)
            records = list(VoteRecord.objects.filter(elo_applied=False).select_related("model_a", "model_b")
                           .order_by("voted_at", "vote_id")[:batch_size])
            if records:
                _elo_apply_records(records, config)
        applied += len(records)
        if len(records) < batch_size:
            return applied


# Beyond this many missed votes one replay of everything is cheaper than draining them in batches.
_CATCH_UP_LIMIT = 100_000


def elo_catch_up() -> int:
    """Apply Elo for recorded votes no drain has applied yet (Redis or the worker was down), oldest
    first; returns how many. The refresh calls it after recording new votes."""
    pending = VoteRecord.objects.filter(elo_applied=False)[:_CATCH_UP_LIMIT + 1].count()
    if pending > _CATCH_UP_LIMIT:
        elo_rebuild()
        return pending
    return elo_drain(fill=False) if pending else 0


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("-inf")


def elo_rebuild() -> int:
    """Recompute online Elo from scratch: counted arena votes and imported battles in time order.

    Imported battles without a time stamp come first, in file order. Returns the votes replayed.
    """
    config = LeaderboardSettings.load()
    vote_records_fill(full=True)
    policy = TiePolicy(config.ties, config.bothbad)
    with transaction.atomic():
        _advisory_xact_lock(_ELO_LOCK)
        cutoff = VoteRecord.objects.aggregate(last=Max("vote_id"))["last"] or 0
        id_names = dict(ArenaModel.objects.values_list("id", "display_name"))
        native = counted_record_rows(
            config=config, in_vote_order=True, max_vote_id=cutoff,
            columns=["voted_at", "vote_id", "model_a_id", "model_b_id", "winner", "language", "is_coding",
                     "prompt_chars", "turns"])
        imported = (counted_imported(config=config).order_by("tstamp", "id")
                    .values_list("tstamp", "id", "model_a", "model_b", "winner", "language", "is_coding",
                                 "prompt_chars", "turns"))
        native_rows = ((_epoch(at), 1, pk, id_names[a], id_names[b], w, lang, code, chars, turns)
                       for at, pk, a, b, w, lang, code, chars, turns in native)
        imported_rows = ((_epoch(at), 0, pk, a, b, w, lang, code, chars, turns)
                         for at, pk, a, b, w, lang, code, chars, turns in imported.iterator(chunk_size=20000))
        engines: dict[str, OnlineElo] = {}
        counted: dict[tuple[str, str], int] = defaultdict(int)
        replayed = 0
        for _, _, _, name_a, name_b, winner, language, coding, chars, turns in heapq.merge(
                imported_rows, native_rows, key=lambda row: row[:3]):
            replayed += 1
            score = policy.score_of_a(winner)
            if score is None:
                continue
            for category in cats.categories_of(language=language, is_coding=coding, prompt_chars=chars, turns=turns,
                                               long_prompt_chars=config.long_prompt_chars):
                engine = engines.get(category)
                if engine is None:
                    engine = engines[category] = OnlineElo(config.elo_k, config.scale, config.base, config.initial,
                                                           policy)
                engine.update_score(name_a, name_b, score)
                counted[(category, name_a)] += 1
                counted[(category, name_b)] += 1
        contenders = {name: pk for pk, name in id_names.items()}
        EloRating.objects.all().delete()
        EloRating.objects.bulk_create(
            [EloRating(category=category, model_name=name, contender_id=contenders.get(name), rating=rating,
                       votes=counted[(category, name)])
             for category, engine in engines.items() for name, rating in engine.ratings.items()],
            batch_size=5000,
        )
        VoteRecord.objects.filter(elo_applied=False, vote_id__lte=cutoff).update(elo_applied=True)
    return replayed


# --------------------------------------------------------------------------------------------------
# Tallies: counted votes per category and pair, kept up to date from the changes triggers queue


def _status_case(*, cap: int, dedup: bool) -> str:
    parts = ["WHEN NOT a.anonymous THEN 1", "WHEN a.failed THEN 2", "WHEN a.leaked THEN 3"]
    if cap > 0:
        parts.append(f"WHEN day_ranked.rank > {int(cap)} THEN 4")
    if dedup:
        parts.append("WHEN prompt_ranked.rank > 1 THEN 5")
    return "CASE " + " ".join(parts) + " ELSE 0 END"


def _changed_statuses_sql(*, cap: int, dedup: bool) -> str:
    """Records whose status moved, with what a tally needs; ``%s``: the battle ids to look at.

    A record's status depends on its own flags and on the eligible records of its rater's day (the
    daily cap) and of its prompt (de-duplication). So every record of those groups of the changed
    records is looked at again, each ranked within its whole group.
    """
    record, battle = VoteRecord._meta.db_table, Battle._meta.db_table
    day = "(r.voted_at AT TIME ZONE 'UTC')::date"
    in_day = ("r.rater_id = g.rater_id AND r.voted_at >= (g.day::timestamp AT TIME ZONE 'UTC') "
              "AND r.voted_at < ((g.day + 1)::timestamp AT TIME ZONE 'UTC')")
    leak = f"LEFT JOIN {battle} leak ON leak.id = r.battle_id AND leak.identity_leak"
    eligible = "r.anonymous AND NOT r.failed AND leak.id IS NULL"
    ctes = [f"d AS (SELECT r.* FROM {record} r WHERE r.battle_id = ANY(%s))"]
    members = ["SELECT battle_id FROM d"]
    if cap > 0:
        ctes.append(f"d_days AS (SELECT DISTINCT r.rater_id, {day} AS day FROM d r)")
        members.append(f"SELECT r.battle_id FROM {record} r JOIN d_days g ON {in_day}")
    if dedup:
        ctes.append("d_prompts AS (SELECT DISTINCT prompt_hash FROM d WHERE prompt_hash <> '')")
        members.append(f"SELECT r.battle_id FROM {record} r JOIN d_prompts p ON p.prompt_hash = r.prompt_hash")
    ctes.append(f"affected AS ({' UNION '.join(members)})")
    ctes.append(f"a AS (SELECT r.*, leak.id IS NOT NULL AS leaked FROM {record} r JOIN affected USING (battle_id) "
                f"{leak})")
    joins = ""
    if cap > 0:
        ctes.append(f"a_days AS (SELECT DISTINCT r.rater_id, {day} AS day FROM a r)")
        ctes.append(f"day_ranked AS (SELECT r.battle_id, ROW_NUMBER() OVER (PARTITION BY r.rater_id, g.day "
                    f"ORDER BY r.voted_at, r.vote_id) AS rank FROM {record} r JOIN a_days g ON {in_day} {leak} "
                    f"WHERE {eligible})")
        joins += " LEFT JOIN day_ranked ON day_ranked.battle_id = a.battle_id"
    if dedup:
        ctes.append("a_prompts AS (SELECT DISTINCT prompt_hash FROM a WHERE prompt_hash <> '')")
        ctes.append(f"prompt_ranked AS (SELECT r.battle_id, ROW_NUMBER() OVER (PARTITION BY r.prompt_hash "
                    f"ORDER BY r.voted_at, r.vote_id) AS rank FROM {record} r JOIN a_prompts p "
                    f"ON p.prompt_hash = r.prompt_hash {leak} WHERE {eligible})")
        joins += " LEFT JOIN prompt_ranked ON prompt_ranked.battle_id = a.battle_id"
    ctes.append(f"fresh AS (SELECT a.*, {_status_case(cap=cap, dedup=dedup)} AS new_status FROM a{joins})")
    return ("WITH " + ", ".join(ctes) + " SELECT f.battle_id, f.new_status, old.status, f.model_a_id, "
            "f.model_b_id, f.winner, f.language, f.is_coding, f.turns, f.prompt_chars FROM fresh f "
            "LEFT JOIN leaderboard_votestatus old ON old.battle_id = f.battle_id "
            "WHERE old.status IS DISTINCT FROM f.new_status")


_TALLY_COLUMNS = {"model_a": "wins_a", "model_b": "wins_b", "tie": "ties", "tie (bothbad)": "bothbad"}


def _tally_rebuild(cursor, config: LeaderboardSettings) -> dict:
    record = VoteRecord._meta.db_table
    cursor.execute("TRUNCATE leaderboard_votestatus, leaderboard_votetally")
    cursor.execute("DELETE FROM leaderboard_tallyqueue")
    sql, params = _records_sql(config=config, columns=["battle_id"])
    codes = " ".join(f"WHEN '{name}' THEN {code}" for name, code in STATUS_CODES.items())
    cursor.execute(f"INSERT INTO leaderboard_votestatus (battle_id, status) {sql}"
                   f"SELECT s.battle_id, CASE s.status {codes} END FROM s", params)
    counts = ", ".join(f"COUNT(*) FILTER (WHERE r.winner = '{winner}')" for winner in _TALLY_COLUMNS)
    cursor.execute(
        f"INSERT INTO leaderboard_votetally (category, model_a_id, model_b_id, {', '.join(_TALLY_COLUMNS.values())}) "
        f"SELECT c.category, r.model_a_id, r.model_b_id, {counts} FROM {record} r "
        f"JOIN leaderboard_votestatus st ON st.battle_id = r.battle_id AND st.status = 0 "
        f"CROSS JOIN LATERAL {category_sql('r', config.long_prompt_chars)} AS c (category) "
        f"WHERE c.category IS NOT NULL GROUP BY 1, 2, 3")
    cursor.execute("SELECT status, COUNT(*) FROM leaderboard_votestatus GROUP BY status")
    return {str(code): n for code, n in cursor.fetchall()}


def _tally_apply(cursor, config: LeaderboardSettings, counts: dict) -> int:
    """Move the statuses and tallies of the queued battles' groups; returns the records that moved."""
    cursor.execute("DELETE FROM leaderboard_tallyqueue RETURNING battle_id")
    queued = sorted({row[0] for row in cursor.fetchall()})
    if not queued:
        return 0
    cursor.execute(_changed_statuses_sql(cap=config.rater_daily_cap, dedup=config.deduplicate_prompts), [queued])
    changed = cursor.fetchall()
    if not changed:
        return 0
    deltas: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    column = {winner: k for k, winner in enumerate(_TALLY_COLUMNS)}
    for battle_id, new, old, model_a, model_b, winner, language, coding, turns, chars in changed:
        if old is not None:
            counts[str(old)] = counts.get(str(old), 0) - 1
        counts[str(new)] = counts.get(str(new), 0) + 1
        step = (1 if new == 0 else 0) - (1 if old == 0 else 0)
        if step:
            for category in cats.categories_of(language=language, is_coding=coding, prompt_chars=chars, turns=turns,
                                               long_prompt_chars=config.long_prompt_chars):
                deltas[(category, model_a, model_b)][column[winner]] += step
    cursor.execute(
        "INSERT INTO leaderboard_votestatus (battle_id, status) SELECT * FROM unnest(%s::bigint[], %s::smallint[]) "
        "ON CONFLICT (battle_id) DO UPDATE SET status = EXCLUDED.status",
        [[row[0] for row in changed], [row[1] for row in changed]])
    if deltas:
        keys = list(deltas)
        names = list(_TALLY_COLUMNS.values())
        cursor.execute(
            f"INSERT INTO leaderboard_votetally (category, model_a_id, model_b_id, {', '.join(names)}) "
            f"SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::int[], %s::int[], %s::int[], %s::int[]) "
            f"ON CONFLICT (category, model_a_id, model_b_id) DO UPDATE SET "
            + ", ".join(f"{n} = leaderboard_votetally.{n} + EXCLUDED.{n}" for n in names),
            [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
             *([deltas[k][j] for k in keys] for j in range(4))])
    return len(changed)


def tally_update(*, config: LeaderboardSettings) -> TallyState | None:
    """Bring the kept statuses and tallies up to date (PostgreSQL; None elsewhere).

    Built whole the first time, when a setting they depend on changed, or when a trigger marked
    them stale (a vote record changed or removed); otherwise only the groups of the queued battles
    are looked at again. Runs under the refresh lock.
    """
    if connection.vendor != "postgresql":
        return None
    wanted = tally_config(config)
    with transaction.atomic(), connection.cursor() as cursor:
        _tune_for_aggregation()
        TallyState.objects.get_or_create(pk=1)
        state = TallyState.objects.select_for_update().get(pk=1)
        if state.stale or state.config != wanted or state.built_at is None:
            state.status_counts = _tally_rebuild(cursor, config)
            state.config, state.stale, state.built_at = wanted, False, timezone.now()
        else:
            counts = dict(state.status_counts)
            if not _tally_apply(cursor, config, counts):
                return state
            state.status_counts = {code: n for code, n in counts.items() if n}
        state.save()
    return state


# --------------------------------------------------------------------------------------------------
# Snapshots


@dataclass
class RefreshReport:
    written: list[RatingSnapshot] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # "category" or "category (style)"
    failed: list[tuple[str, str]] = field(default_factory=list)
    busy: bool = False  # another refresh was running; nothing was done
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"written": [f"{s.category}{' (style)' if s.style_control else ''}" for s in self.written],
                "unchanged": self.unchanged, "failed": [f"{c}: {e}" for c, e in self.failed], "busy": self.busy,
                "seconds": round(self.seconds, 3)}


class _RefreshLock:
    """Session advisory lock on PostgreSQL; a second concurrent refresh backs off instead of queueing."""

    def __enter__(self) -> bool:
        self.held = True
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [_REFRESH_LOCK])
                self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc) -> None:
        if self.held and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_REFRESH_LOCK])


def _style_interval() -> float:
    """Seconds between style-control refreshes run by their own task (0: style control is rated
    inline, with every refresh)."""
    return float(getattr(settings, "LEADERBOARD_STYLE_REFRESH_SECONDS", 900.0) or 0.0)


def _input_version() -> int | None:
    """The change counter the triggers move (PostgreSQL), or None where there are no triggers."""
    if connection.vendor != "postgresql":
        return None
    version = InputVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    if version is None:
        InputVersion.objects.get_or_create(pk=1)
        return 0
    return version


def _last_snapshot_id(variants: tuple[bool, ...]) -> int:
    return RatingSnapshot.objects.filter(style_control__in=variants).aggregate(last=Max("id"))["last"] or 0


def _refresh_scope(*, categories: list[str] | None, variants: tuple[bool, ...], config: LeaderboardSettings) -> str:
    what = [sorted(categories) if categories is not None else None, list(variants), config.__dict__]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def leaderboard_refresh(*, categories: list[str] | None = None, bootstrap_rounds: int | None = None,
                        style_bootstrap_rounds: int | None = None, seed: int | None = None,
                        style_control: bool | None = None, style_only: bool = False,
                        force: bool = False) -> RefreshReport:
    """Rate every category (or the ones given) and write a snapshot for each that changed.

    Categories with fewer than ``LEADERBOARD_MIN_CATEGORY_VOTES`` counted votes are left out unless
    asked for by name; ``overall`` is always rated when there is any vote.

    Style control: ``style_control=None`` follows LEADERBOARD_STYLE_CONTROL; with
    LEADERBOARD_STYLE_REFRESH_SECONDS > 0 (the default) its snapshots are then left to their own
    task (``leaderboard.refresh_style``, scheduled from here at most once per that many seconds), so
    the refresh votes ask for rates the plain snapshots only. ``style_control=True`` rates them
    here; ``style_only`` rates nothing else.

    On PostgreSQL a refresh first compares the input version (a counter triggers move on every
    change ratings depend on) and its settings with where the same kind of refresh last finished:
    when nothing moved it returns at once, reading no vote.
    """
    started = time.perf_counter()
    config = LeaderboardSettings.load(bootstrap_rounds=bootstrap_rounds, style_bootstrap_rounds=style_bootstrap_rounds,
                                      seed=seed, style_control=style_control)
    for category in categories or []:
        if not cats.is_valid_category(category):
            raise ValueError(f"unknown category {category!r}: use overall, multi-turn, long-prompts, coding or "
                             "lang-<code> (e.g. lang-en)")
    style_inline = config.style_control and (style_control is True or style_only or _style_interval() <= 0)
    style_later = config.style_control and not style_inline
    variants = ((True,) if style_only else (False, True) if style_inline else (False,)) if config.style_control \
        else (() if style_only else (False,))
    report = RefreshReport()
    with _RefreshLock() as held:
        if not held:
            report.busy = True
            return report
        vote_records_fill()
        elo_catch_up()
        version = _input_version()
        scope = _refresh_scope(categories=categories, variants=variants, config=config)
        if version is not None and not force and variants:
            mark = RefreshMark.objects.filter(scope=scope).first()
            if mark is not None and mark.version == version and mark.last_snapshot_id == _last_snapshot_id(variants):
                report.unchanged = list(mark.unchanged)
                report.seconds = time.perf_counter() - started
                return report
        if variants:
            _refresh_variants(categories=categories, variants=variants, config=config, force=force, report=report)
        if version is not None and not report.failed and variants:
            RefreshMark.objects.update_or_create(scope=scope, defaults={
                "version": version, "last_snapshot_id": _last_snapshot_id(variants),
                "unchanged": [_report_name(s.category, s.style_control) for s in report.written] + report.unchanged})
    if style_later:
        schedule_refresh(style=True)
    report.seconds = time.perf_counter() - started
    log.info("leaderboard refresh: %s", report.summary())
    return report


def _report_name(category: str, style_control: bool) -> str:
    return f"{category} (style)" if style_control else category


def _speed_window_days() -> int:
    return int(getattr(settings, "LEADERBOARD_SPEED_WINDOW_DAYS", 30) or 0)


def _speed_reuse_seconds() -> float:
    """Speed medians younger than this (in the newest snapshot) are copied instead of read again
    from every finished answer (0: read them on every refresh)."""
    return float(getattr(settings, "LEADERBOARD_SPEED_REUSE_SECONDS", 600.0) or 0.0)


class _Speeds(dict):
    """Speed medians of the contenders, read the first time a snapshot needs them.

    The newest snapshot's medians are reused while younger than LEADERBOARD_SPEED_REUSE_SECONDS;
    contenders it has no row for are read.
    """

    def __init__(self, contender_ids):
        super().__init__()
        self._ids = set(contender_ids)
        self._loaded = False

    def _load(self) -> None:
        missing = set(self._ids)
        reuse = _speed_reuse_seconds()
        if reuse > 0:
            newest = (RatingSnapshot.objects.filter(status=SnapshotStatus.READY,
                                                    created_at__gte=timezone.now() - timedelta(seconds=reuse))
                      .order_by("-created_at", "-id").first())
            if newest is not None and (newest.params or {}).get("speed_window_days") == _speed_window_days():
                for contender_id, ttft, tpot in (SnapshotRow.objects.filter(snapshot=newest, contender__isnull=False)
                                                 .values_list("contender_id", "median_ttft_ms", "median_tpot_ms")):
                    if contender_id in missing:
                        self[contender_id] = (ttft, tpot)
                        missing.discard(contender_id)
        if missing:
            self.update(speed_medians(contender_ids=missing, since=speed_window_start()))
        self._loaded = True

    def get(self, key, default=None):
        if not self._loaded:
            self._load()
        return super().get(key, default)


def _refresh_variants(*, categories: list[str] | None, variants: tuple[bool, ...], config: LeaderboardSettings,
                      force: bool, report: RefreshReport) -> None:
    state = tally_update(config=config)
    if state is not None:
        cells = tallied_vote_cells(config=config, status_counts=state.status_counts)
    else:
        cells = vote_cells(config=config)
    per_category = cells.votes_per_category()
    if categories is None:
        wanted = [cats.OVERALL] if per_category.get(cats.OVERALL) else []
        wanted += [c for c, n in per_category.items() if c != cats.OVERALL and n >= config.min_category_votes]
    else:
        wanted = list(dict.fromkeys(categories))
    contenders = dict(ArenaModel.objects.values_list("display_name", "id"))
    speeds = _Speeds(contenders.values())
    style = style_rows(config=config, tallied=state is not None) if True in variants and wanted else None
    # Each group's changed categories are started together (rated in parallel by a rating pool, see
    # leaderboard.rating_pool), then written in order. Overall (always first) is a group of its
    # own: the main leaderboard is neither slowed by the others nor kept waiting for them.
    for group in (wanted[:1], wanted[1:]):
        ratings = {category: _start_plain_rating(category=category, cells=cells, config=config, force=force,
                                                 report=report)
                   for category in group} if False in variants else {}
        for category in group:
            if ratings.get(category) is not None:
                _refresh_plain(category=category, rating=ratings[category], cells=cells, config=config,
                               contenders=contenders, speeds=speeds, report=report)
            if style is not None:
                _refresh_style(category=category, style=style, cells=cells, config=config,
                               contenders=contenders, speeds=speeds, force=force, report=report)


def _engine_params(config: LeaderboardSettings) -> dict:
    return {"ties": config.ties, "bothbad": config.bothbad, "min_votes": config.min_votes, "k_factor": config.elo_k,
            "scale": config.scale, "base": config.base, "initial": config.initial}


def _digest(category: str, style_control: bool, params: dict, parts: list[bytes]) -> str:
    digest = hashlib.sha256(json.dumps([category, style_control, params], sort_keys=True, default=str).encode())
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _unchanged(category: str, style_control: bool, digest: str, force: bool) -> bool:
    if force:
        return False
    latest = snapshot_latest(category=category, style_control=style_control)
    return latest is not None and latest.input_digest == digest


def _json_matrix(matrix: np.ndarray, digits: int | None = None) -> list[list]:
    values = np.asarray(matrix)
    if digits and values.dtype.kind == "f":
        values = np.round(values, digits)
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        if missing.any():
            values = values.astype(object)
            values[missing] = None
    return values.tolist()


@dataclass
class _PlainRating:
    digest: str
    started: float
    rating: rating_pool.Rating


def _start_plain_rating(*, category: str, cells: VoteCells | CategoryTallies, config: LeaderboardSettings,
                        force: bool, report: RefreshReport) -> _PlainRating | None:
    """The category's rating, started (None when it has no votes or nothing changed)."""
    outcomes = cells.outcomes(category)
    if outcomes.rows == 0:
        return None
    params_for_digest = {**_engine_params(config), "bootstrap_rounds": config.bootstrap_rounds,
                         "seed": config.seed, "filters": config.filters()}
    digest = _digest(category, False, params_for_digest, cells.digest_parts(category))
    if _unchanged(category, False, digest, force):
        report.unchanged.append(category)
        return None
    return _PlainRating(digest=digest, started=time.perf_counter(), rating=rating_pool.submit(
        rate, battles=outcomes, ties=config.ties, bothbad=config.bothbad, bootstrap_rounds=config.bootstrap_rounds,
        seed=config.seed, min_votes=config.min_votes, k_factor=config.elo_k, scale=config.scale, base=config.base,
        initial=config.initial))


def _refresh_plain(*, category: str, rating: _PlainRating, cells: VoteCells | CategoryTallies,
                   config: LeaderboardSettings, contenders: dict[str, int], speeds: dict,
                   report: RefreshReport) -> None:
    digest, started = rating.digest, rating.started
    try:
        result = rating.rating.result()
        solver = result.to_json_dict()["params"]["solver"]
        elo = dict(EloRating.objects.filter(category=category).values_list("model_name", "rating"))
        rows = [SnapshotRow(position=k, model_name=row.model, contender_id=contenders.get(row.model),
                            rating=row.rating, ci_lower=row.ci_lower, ci_upper=row.ci_upper, rank_ub=row.rank_ub,
                            votes=row.votes, win_rate=row.win_rate, predicted_win_rate=row.predicted_win_rate,
                            elo=elo.get(row.model), provisional=row.provisional,
                            **_speed_fields(speeds, contenders.get(row.model)))
                for k, row in enumerate(result.models, 1)]
        snapshot = _write_snapshot(
            category=category, style_control=False, rows=rows, battles=result.battles, votes_read=result.rows,
            params={**result.params, "filters": config.filters(), "filter_counts": cells.stats,
                    "speed_window_days": _speed_window_days()},
            solver=solver, style={}, digest=digest, seconds=time.perf_counter() - started,
            matrices={"names": list(result.names), "battle_counts": _json_matrix(result.battle_counts),
                      "win_fraction": _json_matrix(result.win_fraction, 6),
                      "predicted_win": _json_matrix(result.predicted_win, 6)},
        )
    except (ValueError, ArithmeticError, ConvergenceError, DegenerateDataError, DatabaseError) as error:
        _record_failure(category=category, style_control=False, error=error, report=report)
        return
    report.written.append(snapshot)


def _refresh_style(*, category: str, style: StyleRows, cells: VoteCells | CategoryTallies,
                   config: LeaderboardSettings, contenders: dict[str, int], speeds: dict, force: bool,
                   report: RefreshReport) -> None:
    model_a, model_b, winner, counts_a, counts_b = style.select(category)
    if not model_a:
        return
    keep = style.cells.mask(category)
    params_for_digest = {**_engine_params(config), "bootstrap_rounds": config.style_bootstrap_rounds,
                         "seed": config.seed, "filters": config.filters()}
    parts = [repr(style.cells.names).encode()] + [np.ascontiguousarray(x).tobytes() for x in (
        style.cells.a[keep], style.cells.b[keep], style.cells.winner[keep], counts_a, counts_b)]
    digest = _digest(category, True, params_for_digest, parts)
    if _unchanged(category, True, digest, force):
        report.unchanged.append(f"{category} (style)")
        return
    started = time.perf_counter()
    try:
        fit = fit_style_control(model_a, model_b, winner, counts_a, counts_b, ties=config.ties, bothbad=config.bothbad,
                                scale=config.scale, base=config.base, initial=config.initial,
                                bootstrap_rounds=config.style_bootstrap_rounds, seed=config.seed)
        snapshot = _write_style_snapshot(category=category, fit=fit, style=style, keep=keep, cells=cells, config=config,
                                         contenders=contenders, speeds=speeds, digest=digest, started=started)
    except (ValueError, ArithmeticError, ConvergenceError, DegenerateDataError, DatabaseError) as error:
        _record_failure(category=category, style_control=True, error=error, report=report)
        return
    report.written.append(snapshot)


def _write_style_snapshot(*, category, fit, style: StyleRows, keep, cells: VoteCells, config, contenders, speeds,
                          digest, started) -> RatingSnapshot:
    policy = TiePolicy(config.ties, config.bothbad)
    outcomes = outcomes_from_arrays(style.cells.names, style.cells.a[keep], style.cells.b[keep],
                                    style.cells.winner[keep], style.cells.count[keep])
    pairs = outcomes.scored(policy)
    position = {name: k for k, name in enumerate(pairs.names)}
    names = list(fit.names)
    ratings = np.array([fit.ratings[n] for n in names])
    lower = upper = None
    if fit.ci_lower is not None:
        lower = np.array([fit.ci_lower[n] for n in names])
        upper = np.array([fit.ci_upper[n] for n in names])
    rank = rank_upper_bound(ratings if lower is None else lower, ratings if upper is None else upper)
    index = np.array([position[n] for n in names])
    votes = pairs.votes()[index]
    scores = pairs.scores()[index]
    provisional = provisional_flags(votes, config.min_votes)
    theta = (ratings - config.initial) / _rating_scale(config).points_per_unit
    predicted = predicted_win_matrix(theta)
    order = sorted(range(len(names)), key=lambda k: (-ratings[k], names[k]))
    o = np.array(order, dtype=np.int64)
    elo = dict(EloRating.objects.filter(category=category).values_list("model_name", "rating"))
    n_models = len(names)
    predicted_avg = (predicted.sum(axis=1) - 0.5) / (n_models - 1) if n_models > 1 else np.full(n_models, 0.5)
    rows = [SnapshotRow(
        position=p, model_name=names[k], contender_id=contenders.get(names[k]), rating=float(ratings[k]),
        ci_lower=None if lower is None else float(lower[k]), ci_upper=None if upper is None else float(upper[k]),
        rank_ub=int(rank[k]), votes=int(votes[k]), win_rate=float(scores[k] / votes[k]) if votes[k] else None,
        predicted_win_rate=float(predicted_avg[k]), elo=elo.get(names[k]), provisional=bool(provisional[k]),
        **_speed_fields(speeds, contenders.get(names[k])),
    ) for p, k in enumerate(order, 1)]
    ordered_index = index[o]
    style_info = {
        "features": list(fit.params.get("features", [])), "coefficients": fit.coefficients,
        "coefficient_points": fit.coefficient_points,
        "coefficient_ci": {k: list(v) for k, v in (fit.coefficient_ci or {}).items()},
        "feature_mean": fit.feature_mean, "feature_std": fit.feature_std,
        "constant_features": list(fit.constant_features), "uncontrolled": fit.uncontrolled,
        "battles_without_style": style.without_style,
    }
    return _write_snapshot(
        category=category, style_control=True, rows=rows, battles=fit.battles, votes_read=int(outcomes.rows),
        params={**fit.params, "min_votes": config.min_votes, "k_factor": config.elo_k, "filters": config.filters(),
                "filter_counts": {**cells.stats, "without_style": style.without_style},
                "speed_window_days": _speed_window_days()},
        solver=fit.solver, style=style_info, digest=digest, seconds=time.perf_counter() - started,
        matrices={"names": [names[k] for k in order],
                  "battle_counts": _json_matrix(battle_count_matrix(pairs)[np.ix_(ordered_index, ordered_index)]),
                  "win_fraction": _json_matrix(win_fraction_matrix(pairs)[np.ix_(ordered_index, ordered_index)], 6),
                  "predicted_win": _json_matrix(predicted[np.ix_(o, o)], 6)},
    )


def _speed_fields(speeds: dict, contender_id: int | None) -> dict:
    ttft, tpot = speeds.get(contender_id, (None, None))
    return {"median_ttft_ms": ttft, "median_tpot_ms": tpot}


def _write_snapshot(*, category: str, style_control: bool, rows: list[SnapshotRow], battles: int, votes_read: int,
                    params: dict, solver: dict, style: dict, digest: str, seconds: float,
                    matrices: dict) -> RatingSnapshot:
    """The snapshot and all its rows, or nothing at all."""
    with transaction.atomic():
        snapshot = RatingSnapshot.objects.create(
            category=category, style_control=style_control, status=SnapshotStatus.READY, battles=battles,
            votes_read=votes_read, params=_jsonable(params), solver=_jsonable(solver), matrices=matrices,
            style=_jsonable(style), input_digest=digest, seconds=round(seconds, 4),
        )
        for row in rows:
            row.snapshot = snapshot
        SnapshotRow.objects.bulk_create(rows)
    return snapshot


def _record_failure(*, category: str, style_control: bool, error: Exception, report: RefreshReport) -> None:
    log.exception("leaderboard refresh of %s (style control %s) failed", category, style_control)
    report.failed.append((category + (" (style)" if style_control else ""), str(error)))
    try:
        RatingSnapshot.objects.create(category=category, style_control=style_control, status=SnapshotStatus.FAILED,
                                      error=f"{type(error).__name__}: {error}"[:5000])
    except DatabaseError:
        log.exception("could not record the failed refresh of %s", category)


def _jsonable(value):
    # Engine dictionaries carry numpy scalars and NaN; JSON columns take neither.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------
# Debounced refresh and Elo drain

PENDING_KEY = "leaderboard:refresh:pending"
STYLE_PENDING_KEY = "leaderboard:refresh:style:pending"
ELO_PENDING_KEY = "leaderboard:elo:pending"
_pending_lock = threading.Lock()
_pending_until: dict[str, float] = {}
_redis_clients: dict[str, object] = {}


def _redis(url: str):
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return client


def _claim_pending(delay: float, key: str = PENDING_KEY) -> bool:
    """True for the first caller in a debounce window: the one that must enqueue the refresh."""
    # The mark expires just as the refresh starts, so a vote cast while it runs schedules the next one.
    if getattr(settings, "REDIS_URL", None):
        return bool(_redis(settings.REDIS_URL).set(key, "1", nx=True, px=max(int(delay * 1000), 1)))
    with _pending_lock:
        now = time.monotonic()
        if now < _pending_until.get(key, 0.0):
            return False
        _pending_until[key] = now + delay
        return True


def _release_pending(key: str) -> None:
    """End a debounce window early: the next caller claims a new one."""
    if getattr(settings, "REDIS_URL", None):
        _redis(settings.REDIS_URL).delete(key)
        return
    with _pending_lock:
        _pending_until.pop(key, None)


def _run_refresh_in_process(categories: list[str] | None = None, style: bool = False) -> None:
    from django.db import close_old_connections

    try:
        if style:
            leaderboard_refresh(style_control=True, style_only=True)
        else:
            leaderboard_refresh(categories=categories)
    except Exception:
        log.exception("in-process leaderboard refresh failed")
    finally:
        close_old_connections()


def schedule_refresh(*, countdown: float | None = None, style: bool = False) -> bool:
    """Enqueue a leaderboard refresh ``countdown`` seconds from now unless one is already pending.

    ``style``: the style-control refresh instead, LEADERBOARD_STYLE_REFRESH_SECONDS from now by
    default. Returns True when this call enqueued it. Never raises: a vote must not fail because
    the broker or Redis is down (the periodic refresh catches up).
    """
    if style:
        default, key = _style_interval(), STYLE_PENDING_KEY
    else:
        default, key = getattr(settings, "LEADERBOARD_REFRESH_DEBOUNCE_SECONDS", 30.0), PENDING_KEY
    delay = float(default if countdown is None else countdown)
    try:
        if not _claim_pending(delay, key):
            return False
        if getattr(settings, "GENERATION_IN_PROCESS", False):
            timer = threading.Timer(delay, _run_refresh_in_process, kwargs={"style": style})
            timer.daemon = True
            timer.start()
        else:
            from leaderboard.tasks import refresh, refresh_style

            (refresh_style if style else refresh).apply_async(countdown=delay)
        return True
    except Exception:
        log.exception("could not schedule a leaderboard refresh")
        return False


# Until when (time.monotonic) the drain window this process claimed is surely still pending.
_elo_claimed_until = [0.0]


def _elo_drain_window() -> float:
    return float(getattr(settings, "LEADERBOARD_ELO_DRAIN_SECONDS", 0.25))


def schedule_elo_drain() -> bool:
    """After a vote commits: ask for one Elo drain, LEADERBOARD_ELO_DRAIN_SECONDS from now, unless
    one is already pending for this window; True when this call enqueued it.

    Costs one Redis ``SET NX PX`` (with REDIS_URL; a lock and a time stamp in this process
    otherwise; nothing for the rest of a window this process claimed itself), and a task only
    for the first vote of a window. Never raises: a vote must not fail
    because the broker or Redis is down; its Elo is then applied by the next drain or the periodic
    refresh.
    """
    window = _elo_drain_window()
    try:
        if time.monotonic() < _elo_claimed_until[0]:
            return False  # this process claimed the window: its drain has not started yet
        claimed_at = time.monotonic()
        if not _claim_pending(window, ELO_PENDING_KEY):
            return False
        # The drain starts a window from now at the earliest (a countdown, or a wait in this
        # process's pool), and applies every vote committed before it starts; until a little
        # before then the votes of this process need not ask Redis again.
        _elo_claimed_until[0] = claimed_at + window * 0.8
        from leaderboard.tasks import drain_elo

        if getattr(settings, "GENERATION_IN_PROCESS", False):
            # In the process's task pool at once, waiting out the window there: whoever drains that
            # pool (a shutdown, a test's teardown) also waits for this drain.
            from workers import dispatch

            dispatch.enqueue(drain_elo, wait_s=window)
        else:
            drain_elo.apply_async(countdown=window)
        return True
    except Exception:
        log.exception("could not schedule the online Elo drain")
        return False


def elo_drain_now() -> int:
    """The drain task's work: end the window, then apply every vote not applied yet.

    The window ends first, so a vote that commits while this drain runs claims the next window
    (and its own drain) instead of waiting for the periodic refresh.
    """
    _elo_claimed_until[0] = 0.0
    try:
        _release_pending(ELO_PENDING_KEY)
    except Exception:
        log.exception("could not end the online Elo drain window; it expires on its own")
    return elo_drain()


def refresh_enqueue_now(*, categories: list[str] | None = None) -> None:
    """Start a refresh at once (admin button), whatever the debounce says."""
    if getattr(settings, "GENERATION_IN_PROCESS", False):
        threading.Thread(target=_run_refresh_in_process, kwargs={"categories": categories}, daemon=True,
                         name="leaderboard-refresh").start()
        return
    from leaderboard.tasks import refresh

    refresh.apply_async(kwargs={"categories": categories})


# --------------------------------------------------------------------------------------------------
# Export


def judge_hash(rater_id: int) -> str:
    """A stable pseudonym for a rater: keyed with SECRET_KEY, so ids cannot be guessed back."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"arena-judge:{rater_id}".encode(), hashlib.sha256).hexdigest()
    return f"arena_user_{digest[:16]}"


def _language_name(code: str) -> str:
    return cats.LANGUAGE_NAMES.get(code, code) if code else "unknown"


def _conversation(turns: list[Turn], side: str) -> list[dict]:
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        answer = next((g for g in turn.generations.all() if g.side == side), None)
        messages.append({"role": "assistant", "content": answer.text if answer else ""})
    return messages


def battles_export(*, out: TextIO, conversations: bool = False, include_imported: bool = True) -> int:
    """Write votes as a FastChat ``clean_battle`` JSON list; returns the number of battles written.

    Arena votes on battles flagged for an identity leak or with a failed answer are left out (a
    clean export); non-anonymous votes are kept with ``anony: false``. Raters appear only as
    ``judge`` pseudonyms.
    """
    vote_records_fill()
    votes = (Vote.objects.filter(battle__identity_leak=False, battle__status=BattleStatus.VOTED)
             .exclude(battle__turns__generations__status=GenerationStatus.FAILED)
             .select_related("battle__model_a", "battle__model_b", "leaderboard_record")
             .order_by("created_at", "id"))
    if conversations:
        votes = votes.prefetch_related("battle__turns__generations")
    written = 0
    out.write("[")
    for vote in votes.iterator(chunk_size=2000):
        battle = vote.battle
        tags = getattr(vote, "leaderboard_record", None)
        row = {
            "question_id": battle.public_id.hex, "model_a": battle.model_a.display_name,
            "model_b": battle.model_b.display_name, "winner": vote.winner, "judge": judge_hash(vote.rater_id),
            "turn": tags.turns if tags else 1, "anony": battle.anonymous,
            "language": _language_name(tags.language if tags else ""), "tstamp": vote.created_at.timestamp(),
        }
        if conversations:
            turns = sorted(battle.turns.all(), key=lambda t: t.index)
            row["conversation_a"] = _conversation(turns, "a")
            row["conversation_b"] = _conversation(turns, "b")
        out.write(("\n" if written == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
        written += 1
    if include_imported:
        for battle in ImportedBattle.objects.order_by("tstamp", "id").iterator(chunk_size=5000):
            row = {"model_a": battle.model_a, "model_b": battle.model_b, "winner": battle.winner,
                   "judge": battle.judge, "turn": battle.turns, "anony": battle.anony,
                   "language": _language_name(battle.language),
                   "tstamp": battle.tstamp.timestamp() if battle.tstamp else None}
            if battle.question_id:
                row = {"question_id": battle.question_id, **row}
            if conversations and battle.conversation_a is not None:
                row["conversation_a"] = battle.conversation_a
                row["conversation_b"] = battle.conversation_b
            out.write(("\n" if written == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
            written += 1
    out.write("\n]\n" if written else "]\n")
    return written


# --------------------------------------------------------------------------------------------------
# Import


class BattleImportError(Exception):
    """The file has bad rows: nothing was imported. ``errors`` hold each with its line number."""

    def __init__(self, errors: list[BattleFileError], *, truncated: bool = False):
        self.errors = errors
        self.truncated = truncated
        more = " (and more; stopped counting)" if truncated else ""
        super().__init__(f"{len(errors)} bad row(s){more}, nothing imported:\n" + "\n".join(str(e) for e in errors))


@dataclass
class ImportReport:
    rows: int = 0  # battles read from the file
    added: int = 0  # new imported battles
    already_imported: int = 0  # rows whose key was already stored (re-import)
    arena_battles: int = 0  # rows that are this arena's own battles (by question_id), skipped
    elo_replayed: int = 0
    seconds: float = 0.0


Progress = Callable[[str, int], None]
_PROGRESS_EVERY = 10_000
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    import gzip

    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BattleFileError(path, number, f"not UTF-8 text: {error.reason}") from None
            yield number, (line.removeprefix("\ufeff") if number == 1 else line)


def _objects_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield number, BattleFileError(path, number, f"invalid JSON: {error.msg} (column {error.colno})")


def _objects_fastchat(path: Path) -> Iterator[tuple[int, object]]:
    text = "".join(line for _, line in _text_lines(path))
    decoder = json.JSONDecoder()

    def skip(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    position = skip(0)
    if position >= len(text) or text[position] != "[":
        raise BattleFileError(path, line_of(position), "expected a JSON list of battles starting with '['")
    position = skip(position + 1)
    line, counted_to = 1, 0
    if position < len(text) and text[position] == "]":
        return
    while True:
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            obj, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            # The rest of a broken list cannot be trusted: stop here.
            raise BattleFileError(path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})") from None
        yield line, obj
        position = skip(end)
        if position < len(text) and text[position] == ",":
            position = skip(position + 1)
        elif position < len(text) and text[position] == "]":
            if skip(position + 1) != len(text):
                raise BattleFileError(path, line_of(skip(position + 1)), "unexpected content after the list")
            return
        else:
            raise BattleFileError(path, line_of(position), "expected ',' or ']' after a battle")


def _objects_csv(path: Path) -> Iterator[tuple[int, object]]:
    numbered = _text_lines(path)
    current = {"line": 0}

    def lines():
        for number, line in numbered:
            current["line"] = number
            yield line

    reader = csv.reader(lines())
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise BattleFileError(path, 1, "empty file: expected a header with model_a, model_b, winner") from None
    missing = [name for name in ("model_a", "model_b", "winner") if name not in header]
    if missing:
        raise BattleFileError(path, 1, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                yield current["line"], BattleFileError(path, current["line"],
                                                       f"expected {len(header)} columns, found {len(row)}")
                continue
            yield current["line"], {name: value for name, value in zip(header, row) if name}
    except csv.Error as error:
        raise BattleFileError(path, current["line"], f"unreadable CSV: {error}") from None


def _read_objects(path: Path, format: str) -> Iterator[tuple[int, object]]:
    if format == "auto":
        format = detect_format(path)
    reader = {"fastchat": _objects_fastchat, "jsonl": _objects_jsonl, "csv": _objects_csv}[format]
    return reader(path)


def _parse_tstamp(value, path, line) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BattleFileError(path, line, f"tstamp must be a Unix time or an ISO 8601 date; got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                raise BattleFileError(path, line, f"tstamp must be a Unix time or an ISO 8601 date; got {value!r}") \
                    from None
            return moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)
    if not math.isfinite(number) or not 0 <= number < 1e11:
        raise BattleFileError(path, line, f"tstamp out of range: {value!r}")
    return datetime.fromtimestamp(number, tz=dt_timezone.utc)


def _parse_bool(value, name, path, line, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BattleFileError(path, line, f"{name!r} must be true or false; got {value!r}")


def _parse_conversation(value, name, path, line) -> list[dict] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BattleFileError(path, line, f"{name} must be a list of messages") from None
    if not isinstance(value, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        raise BattleFileError(path, line, f"{name} must be a list of {{\"role\", \"content\"}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _imported_battle(path: Path, line: int, obj) -> ImportedBattle:
    """One file row as an unsaved ImportedBattle; BattleFileError (with the line) when it is bad."""
    if isinstance(obj, BattleFileError):
        raise obj
    if not isinstance(obj, dict):
        raise BattleFileError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in ("model_a", "model_b", "winner") if key not in obj]
    if missing:
        raise BattleFileError(path, line, f"missing {', '.join(missing)}")
    model_a, model_b, winner = obj["model_a"], obj["model_b"], obj["winner"]
    try:
        check_vote(model_a, model_b, winner)
    except ValueError as error:
        raise BattleFileError(path, line, str(error)) from None
    if len(model_a) > 200 or len(model_b) > 200:
        raise BattleFileError(path, line, "model names are limited to 200 characters")
    question_id = obj.get("question_id") or ""
    if not isinstance(question_id, (str, int)) or len(str(question_id)) > 100:
        raise BattleFileError(path, line, "question_id must be a string of at most 100 characters")
    question_id = str(question_id)
    conversation_a = _parse_conversation(obj.get("conversation_a"), "conversation_a", path, line)
    conversation_b = _parse_conversation(obj.get("conversation_b"), "conversation_b", path, line)
    turn = obj.get("turn")
    if turn not in (None, ""):
        try:
            turn = int(turn)
            if turn < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise BattleFileError(path, line, f"turn must be a whole number >= 1; got {obj.get('turn')!r}") from None
    language = obj.get("language") or ""
    if not isinstance(language, str):
        raise BattleFileError(path, line, f"language must be a string; got {language!r}")
    judge = obj.get("judge")
    prompts = [m["content"] for m in conversation_a or [] if m["role"] == "user"]
    tags = cats.tag_prompts(prompts, language=language) if prompts else None
    has_style = conversation_a is not None and conversation_b is not None
    content = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    key_source = f"qid:{question_id}" if question_id else f"row:{content}\nline:{line}"
    return ImportedBattle(
        import_key=hashlib.sha256(key_source.encode("utf-8")).hexdigest(), source=str(path.name)[:255], line=line,
        question_id=question_id, model_a=model_a, model_b=model_b, winner=winner,
        tstamp=_parse_tstamp(obj.get("tstamp"), path, line),
        anony=_parse_bool(obj.get("anony"), "anony", path, line, default=True),
        judge="" if judge is None else str(judge)[:200],
        language=tags.language if tags else cats.language_code(language),
        is_coding=tags.is_coding if tags else False, prompt_chars=tags.prompt_chars if tags else None,
        turns=turn or (tags.turns if tags else 1), prompt_hash=tags.prompt_hash if tags else "",
        style_a=_style_of([m["content"] for m in conversation_a if m["role"] == "assistant"]) if has_style else None,
        style_b=_style_of([m["content"] for m in conversation_b if m["role"] == "assistant"]) if has_style else None,
        conversation_a=conversation_a, conversation_b=conversation_b,
    )


def battles_import(*, path: str | Path, format: str = "auto", progress: Progress | None = None,
                   max_errors: int = 20, batch_size: int = 2000) -> ImportReport:
    """Import battles from a FastChat JSON list, JSON Lines or CSV file: all of them or none.

    A first pass checks every row and collects up to ``max_errors`` bad ones (BattleImportError, with
    line numbers; nothing written). A second pass inserts inside one transaction, skipping rows
    already imported (same key) and this arena's own exported battles (same question_id). Online
    Elo is then replayed so imported votes count in it too.
    """
    started = time.perf_counter()
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if not path.is_file():
        raise BattleFileError(path, None, "no such file")
    report = ImportReport()
    errors: list[BattleFileError] = []
    truncated = False
    for line, obj in _read_objects(path, format):
        try:
            _imported_battle(path, line, obj)
        except BattleFileError as error:
            errors.append(error)
            if len(errors) >= max_errors:
                truncated = True
                break
            continue
        report.rows += 1
        if progress and report.rows % _PROGRESS_EVERY == 0:
            progress("checked", report.rows)
    if errors:
        raise BattleImportError(errors, truncated=truncated)
    if progress:
        progress("checked", report.rows)

    before = ImportedBattle.objects.count()
    written = 0
    with transaction.atomic():
        batch: list[ImportedBattle] = []
        for line, obj in _read_objects(path, format):
            batch.append(_imported_battle(path, line, obj))
            if len(batch) >= batch_size:
                report.arena_battles += _insert_batch(batch)
                if progress and (written + len(batch)) // _PROGRESS_EVERY > written // _PROGRESS_EVERY:
                    progress("written", written + len(batch))
                written += len(batch)
                batch = []
        if batch:
            report.arena_battles += _insert_batch(batch)
            written += len(batch)
    if progress:
        progress("written", written)
    report.added = ImportedBattle.objects.count() - before
    report.already_imported = report.rows - report.added - report.arena_battles
    if report.added:
        report.elo_replayed = elo_rebuild()
    report.seconds = time.perf_counter() - started
    return report


def _insert_batch(batch: list[ImportedBattle]) -> int:
    """Insert new rows; returns how many were skipped as this arena's own battles."""
    ids = [b.question_id for b in batch if len(b.question_id) == 32]
    own = set()
    if ids:
        import uuid

        candidates = []
        for value in ids:
            try:
                candidates.append(uuid.UUID(hex=value))
            except ValueError:
                continue
        own = {u.hex for u in Battle.objects.filter(public_id__in=candidates).values_list("public_id", flat=True)}
    fresh = [b for b in batch if b.question_id not in own]
    ImportedBattle.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(batch) - len(fresh)


def export_to_path(*, path: str | Path, conversations: bool = False, include_imported: bool = True) -> int:
    """``battles_export`` into a file, written whole or not at all (a temporary file renamed)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="utf-8") as handle:
        written = battles_export(out=handle, conversations=conversations, include_imported=include_imported)
    temporary.replace(path)
    return written

