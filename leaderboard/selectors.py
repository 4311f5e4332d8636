"""Reads for the leaderboard: votes aggregated in SQL, snapshots, the rows and charts pages show.

The rating input is read in one grouped query per source (arena votes, imported battles): one row
per (model A, model B, winner, category tags) with its count. Every category is then a mask over
those cells, so all categories of a refresh cost one scan of the votes.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Iterable

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Aggregate, BooleanField, Case, Count, Exists, F, FloatField, OuterRef, Q, QuerySet, Value, When, Window,
)
from django.db.models.functions import RowNumber
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.text import slugify

from arena.models import ArenaModel, Battle, Generation, GenerationStatus
from leaderboard import categories as cats
from leaderboard import harness
from leaderboard.engine.outcomes import WINNERS, PairOutcomes
from leaderboard.models import (
    IMPORTED_COLUMN_SET_KEY, BenchmarkColumnSet, EloRating, HarnessFile, HarnessResult, ImportedBattle, RatingSnapshot,
    SnapshotRow, SnapshotStatus, VoteRecord,
)

WINNER_INDEX = {winner: k for k, winner in enumerate(WINNERS)}


# --------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class LeaderboardSettings:
    bootstrap_rounds: int = 1000
    style_bootstrap_rounds: int = 100
    seed: int | None = None
    min_votes: int = 50
    min_category_votes: int = 20
    rater_daily_cap: int = 200  # 0: no cap
    deduplicate_prompts: bool = False
    long_prompt_chars: int = 1000
    style_control: bool = True
    ties: str = "half"
    bothbad: str = "tie"
    elo_k: float = 4.0
    scale: float = 400.0
    base: float = 10.0
    initial: float = 1000.0

    @classmethod
    def load(cls, **overrides) -> "LeaderboardSettings":
        values = {
            "bootstrap_rounds": getattr(settings, "LEADERBOARD_BOOTSTRAP_ROUNDS", cls.bootstrap_rounds),
            "style_bootstrap_rounds": getattr(settings, "LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS",
                                              cls.style_bootstrap_rounds),
            "seed": getattr(settings, "LEADERBOARD_BOOTSTRAP_SEED", cls.seed),
            "min_votes": getattr(settings, "LEADERBOARD_MIN_VOTES", cls.min_votes),
            "min_category_votes": getattr(settings, "LEADERBOARD_MIN_CATEGORY_VOTES", cls.min_category_votes),
            "rater_daily_cap": getattr(settings, "LEADERBOARD_RATER_DAILY_CAP", cls.rater_daily_cap),
            "deduplicate_prompts": getattr(settings, "LEADERBOARD_DEDUPLICATE_PROMPTS", cls.deduplicate_prompts),
            "long_prompt_chars": getattr(settings, "LEADERBOARD_LONG_PROMPT_CHARS", cls.long_prompt_chars),
            "style_control": getattr(settings, "LEADERBOARD_STYLE_CONTROL", cls.style_control),
            "ties": getattr(settings, "LEADERBOARD_TIES", cls.ties),
            "bothbad": getattr(settings, "LEADERBOARD_BOTHBAD", cls.bothbad),
            "elo_k": getattr(settings, "LEADERBOARD_ELO_K", cls.elo_k),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def filters(self) -> dict:
        return {"anonymous_only": True, "exclude_identity_leak": True, "exclude_failed": True,
                "rater_daily_cap": self.rater_daily_cap, "deduplicate_prompts": self.deduplicate_prompts,
                "long_prompt_chars": self.long_prompt_chars}


# --------------------------------------------------------------------------------------------------
# Votes that count


def _leaked() -> Exists:
    # Read live: a battle may be flagged for an identity leak after its vote was recorded.
    return Exists(Battle.objects.filter(pk=OuterRef("battle_id"), identity_leak=True))


def eligible_records() -> QuerySet[VoteRecord]:
    """Votes that may count at all: anonymous, no failed answer, not flagged for an identity leak."""
    return VoteRecord.objects.filter(anonymous=True, failed=False).exclude(_leaked())


COUNTED = "counted"


def _records_sql(*, config: LeaderboardSettings, columns: list[str]) -> tuple[str, list]:
    """``WITH ...`` defining ``s``: every vote record (``columns`` of it) with a ``status``.

    ``status`` is "counted", or the first filter that removed the vote: "not_anonymous", "failed",
    "identity_leak", "daily_cap" (beyond the rater's first ``rater_daily_cap`` eligible votes of
    that UTC day), "duplicate_prompt" (not the first eligible vote on its first prompt).

    Ranking every vote would sort the whole table; instead the (rater, day) groups over the cap and
    the prompts asked more than once are found by grouping, and only their votes are ranked.
    Written as SQL because the ORM wraps window filters around the grouping, which then groups nothing.
    """
    record = VoteRecord._meta.db_table
    battle = Battle._meta.db_table
    source = f"{record} r LEFT JOIN {battle} leak ON leak.id = r.battle_id AND leak.identity_leak"
    eligible = "r.anonymous AND NOT r.failed AND leak.id IS NULL"
    ctes, joins, params = [], "", []
    status = ["WHEN NOT r.anonymous THEN 'not_anonymous'", "WHEN r.failed THEN 'failed'",
              "WHEN leak.id IS NOT NULL THEN 'identity_leak'"]
    if config.rater_daily_cap > 0:
        day, day_params = connection.ops.datetime_cast_date_sql("r.voted_at", (), "UTC")
        cap = int(config.rater_daily_cap)
        ctes.append(f"busy AS (SELECT r.rater_id, {day} AS day FROM {source} WHERE {eligible} "
                    "GROUP BY r.rater_id, 2 HAVING COUNT(*) > %s)")
        ctes.append(f"over_cap AS (SELECT ranked.vote_id FROM (SELECT r.vote_id, ROW_NUMBER() OVER ("
                    f"PARTITION BY r.rater_id, {day} ORDER BY r.voted_at, r.vote_id) AS day_rank FROM {source} "
                    f"JOIN busy ON busy.rater_id = r.rater_id AND busy.day = {day} WHERE {eligible}) ranked "
                    "WHERE ranked.day_rank > %s)")
        params += [*day_params, cap, *day_params, *day_params, cap]
        joins += " LEFT JOIN over_cap ON over_cap.vote_id = r.vote_id"
        status.append("WHEN over_cap.vote_id IS NOT NULL THEN 'daily_cap'")
    if config.deduplicate_prompts:
        ctes.append(f"repeated AS (SELECT r.prompt_hash FROM {source} WHERE {eligible} AND r.prompt_hash <> '' "
                    "GROUP BY r.prompt_hash HAVING COUNT(*) > 1)")
        ctes.append(f"duplicate AS (SELECT ranked.vote_id FROM (SELECT r.vote_id, ROW_NUMBER() OVER ("
                    f"PARTITION BY r.prompt_hash ORDER BY r.voted_at, r.vote_id) AS prompt_rank FROM {source} "
                    f"JOIN repeated ON repeated.prompt_hash = r.prompt_hash WHERE {eligible}) ranked "
                    "WHERE ranked.prompt_rank > 1)")
        joins += " LEFT JOIN duplicate ON duplicate.vote_id = r.vote_id"
        status.append("WHEN duplicate.vote_id IS NOT NULL THEN 'duplicate_prompt'")
    ctes.append(f"s AS (SELECT CASE {' '.join(status)} ELSE '{COUNTED}' END AS status, "
                f"{', '.join('r.' + column for column in columns)} FROM {source}{joins})")
    return "WITH " + ", ".join(ctes) + " ", params


def counted_record_rows(*, config: LeaderboardSettings, columns: list[str], in_vote_order: bool = False,
                        max_vote_id: int | None = None) -> Iterable[tuple]:
    """Counted votes one by one (``columns`` of VoteRecord), optionally in the order they were cast."""
    sql, params = _records_sql(config=config, columns=list(dict.fromkeys([*columns, "voted_at", "vote_id"])))
    sql += f"SELECT {', '.join('s.' + column for column in columns)} FROM s WHERE s.status = %s"
    params.append(COUNTED)
    if max_vote_id is not None:
        sql += " AND s.vote_id <= %s"
        params.append(max_vote_id)
    if in_vote_order:
        sql += " ORDER BY s.voted_at, s.vote_id"
    decoders = [_decoder(column) for column in columns]
    with transaction.atomic(), connection.cursor() as cursor:
        _tune_for_aggregation()
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(20000):
            for row in batch:
                yield tuple(decode(value) for decode, value in zip(decoders, row))


def _decoder(column: str):
    # Raw SQL skips the ORM's converters: SQLite hands back JSON as text, times as naive strings
    # and booleans as 0/1.
    if column in {"style_a", "style_b"}:
        return _json_value
    if column == "voted_at":
        return _utc_datetime
    if column in {"is_coding", "anonymous", "failed"}:
        return bool
    return _unchanged


def _json_value(value):
    return json.loads(value) if isinstance(value, str) else value


def _utc_datetime(value):
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt_timezone.utc)


def _unchanged(value):
    return value


def counted_imported(*, config: LeaderboardSettings) -> QuerySet[ImportedBattle]:
    battles = ImportedBattle.objects.filter(anony=True)
    if config.deduplicate_prompts:
        # Rows without a conversation have no prompt to compare: they are never duplicates.
        first_of_prompt = (ImportedBattle.objects.filter(anony=True).exclude(prompt_hash="")
                           .annotate(prompt_rank=Window(RowNumber(), partition_by=[F("prompt_hash")],
                                                        order_by=[F("tstamp").asc(nulls_first=True), F("id").asc()]))
                           .filter(prompt_rank=1).values("pk"))
        battles = battles.filter(Q(prompt_hash="") | Q(pk__in=first_of_prompt))
    return battles


def _flag(condition: Q) -> Case:
    return Case(When(condition, then=Value(True)), default=Value(False), output_field=BooleanField())


@dataclass(frozen=True)
class VoteCells:
    """Vote counts per (model A, model B, winner, category tags): the whole input of a refresh."""

    names: tuple[str, ...]  # sorted, as the engine orders models
    a: np.ndarray  # index into names
    b: np.ndarray
    winner: np.ndarray  # index into WINNERS
    count: np.ndarray
    language: np.ndarray  # index into languages
    languages: tuple[str, ...]
    coding: np.ndarray
    multi_turn: np.ndarray
    long_prompt: np.ndarray
    stats: dict = field(default_factory=dict)

    def mask(self, category: str) -> np.ndarray:
        if category == cats.OVERALL:
            return np.ones(len(self.count), dtype=bool)
        if category == cats.MULTI_TURN:
            return self.multi_turn
        if category == cats.LONG_PROMPTS:
            return self.long_prompt
        if category == cats.CODING:
            return self.coding
        if category.startswith(cats.LANGUAGE_PREFIX):
            code = category[len(cats.LANGUAGE_PREFIX):]
            if code not in self.languages:
                return np.zeros(len(self.count), dtype=bool)
            return self.language == self.languages.index(code)
        raise ValueError(f"unknown category {category!r}")

    def votes_per_category(self) -> dict[str, int]:
        totals = {category: int(self.count[self.mask(category)].sum()) for category in cats.FIXED_CATEGORIES}
        for k, code in enumerate(self.languages):
            if code:
                totals[cats.LANGUAGE_PREFIX + code] = int(self.count[self.language == k].sum())
        return totals

    def outcomes(self, category: str) -> PairOutcomes:
        keep = self.mask(category)
        return outcomes_from_arrays(self.names, self.a[keep], self.b[keep], self.winner[keep], self.count[keep])

    def digest_parts(self, category: str) -> list[bytes]:
        return outcome_digest_parts(self.outcomes(category))


def outcome_digest_parts(outcomes: PairOutcomes) -> list[bytes]:
    """What a snapshot's input digest is made of: the models and every pair's counts."""
    return [repr(outcomes.names).encode(), int(outcomes.rows).to_bytes(8, "little"),
            *(np.ascontiguousarray(array, dtype=np.int64).tobytes() for array in (
                outcomes.first, outcomes.second, outcomes.wins_first, outcomes.wins_second, outcomes.ties,
                outcomes.bothbad))]


def outcomes_from_arrays(names: tuple[str, ...], a: np.ndarray, b: np.ndarray, winner: np.ndarray,
                         count: np.ndarray) -> PairOutcomes:
    """``PairOutcomes`` exactly as the engine's OutcomeCounter would build it from the same votes.

    ``names`` must be sorted; models without a vote in the selection are left out and the rest
    re-indexed, so a category is rated on its own models only.
    """
    present = np.unique(np.concatenate([a, b])) if len(a) else np.zeros(0, dtype=np.int64)
    local_a = np.searchsorted(present, a)
    local_b = np.searchsorted(present, b)
    m = max(len(present), 1)
    key = local_a.astype(np.int64) * m + local_b
    unique, inverse = np.unique(key, return_inverse=True)
    table = np.zeros((len(unique), 4), dtype=np.int64)
    np.add.at(table, (inverse, winner.astype(np.int64)), count.astype(np.int64))
    return PairOutcomes(
        names=tuple(names[k] for k in present), first=(unique // m).astype(np.int64),
        second=(unique % m).astype(np.int64), wins_first=table[:, 0], wins_second=table[:, 1], ties=table[:, 2],
        bothbad=table[:, 3],
    )


def contender_names() -> dict[int, str]:
    return dict(ArenaModel.objects.values_list("id", "display_name"))


def vote_cells(*, config: LeaderboardSettings) -> VoteCells:
    """Counted votes of the arena and of imported battles, grouped by pair, outcome and tags.

    Arena votes take one SQL statement: votes a filter removed collapse into one row per filter
    (their counts go to ``stats``); counted votes are grouped by everything a category needs.
    """
    sql, params = _records_sql(config=config, columns=[
        "model_a_id", "model_b_id", "winner", "language", "is_coding", "turns", "prompt_chars"])
    # The three yes/no tags travel as one small integer: fewer grouping keys, a smaller hash table.
    sql += ("SELECT s.status, s.model_a_id, s.model_b_id, s.winner, s.language, "
            "(CASE WHEN s.is_coding THEN 1 ELSE 0 END) + (CASE WHEN s.turns > 1 THEN 2 ELSE 0 END)"
            " + (CASE WHEN s.prompt_chars > %s THEN 4 ELSE 0 END), COUNT(*) FROM s GROUP BY 1, 2, 3, 4, 5, 6")
    params.append(int(config.long_prompt_chars))
    long_chars = config.long_prompt_chars
    imported = (counted_imported(config=config)
                .values_list("model_a", "model_b", "winner", "language", "is_coding")
                .annotate(multi=_flag(Q(turns__gt=1)), long=_flag(Q(prompt_chars__gt=long_chars)), n=Count("id"))
                .order_by())
    with transaction.atomic():
        _tune_for_aggregation()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            grouped = cursor.fetchall()
        imported_rows = list(imported)
    id_names = contender_names()
    removed: dict[str, int] = {}
    native_rows = []
    for status, a, b, winner, language, flags, n in grouped:
        if status == COUNTED:
            native_rows.append((id_names[a], id_names[b], winner, language, bool(flags & 1), bool(flags & 2),
                                bool(flags & 4), n))
        else:
            removed[status] = removed.get(status, 0) + n
    cells = _cells_from_rows(native_rows + imported_rows)
    native_votes = sum(row[-1] for row in native_rows)
    stats = {
        "votes_native": native_votes + sum(removed.values()), "counted_native": native_votes,
        **{f"removed_{name}": removed.get(name, 0) for name in
           ("not_anonymous", "failed", "identity_leak", "daily_cap", "duplicate_prompt")},
        "imported_total": ImportedBattle.objects.count(),
        "counted_imported": int(cells.count.sum()) - native_votes,
    }
    return VoteCells(**{**cells.__dict__, "stats": stats})


# Vote statuses as the tallies store them (leaderboard_votestatus.status).
STATUS_CODES = {COUNTED: 0, "not_anonymous": 1, "failed": 2, "identity_leak": 3, "daily_cap": 4,
                "duplicate_prompt": 5}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}


def tally_config(config: LeaderboardSettings) -> dict:
    """The settings the tallies depend on: another value of any of them means building them again."""
    return {"rater_daily_cap": int(config.rater_daily_cap), "deduplicate_prompts": bool(config.deduplicate_prompts),
            "long_prompt_chars": int(config.long_prompt_chars)}


def category_sql(record: str, long_prompt_chars: int) -> str:
    """``VALUES`` of every category a record counts in (NULL where it does not), as ``categories_of``."""
    return (f"(VALUES ('{cats.OVERALL}'), (CASE WHEN {record}.language <> '' THEN '{cats.LANGUAGE_PREFIX}' || "
            f"{record}.language END), (CASE WHEN {record}.turns > 1 THEN '{cats.MULTI_TURN}' END), "
            f"(CASE WHEN {record}.prompt_chars > {int(long_prompt_chars)} THEN '{cats.LONG_PROMPTS}' END), "
            f"(CASE WHEN {record}.is_coding THEN '{cats.CODING}' END))")


def packed_float_rows(*, columns: list[str], source: str, order: str, params: list | tuple = (),
                      group_size: int = 65536) -> np.ndarray:
    """``SELECT columns FROM source ORDER BY order`` as a (rows x columns) float64 array.

    The server packs the rows into one binary value per group of ``group_size`` consecutive
    ``order`` values (an integer key) and numpy unpacks them: a few large values cross the wire
    instead of a Python tuple per row. ``columns`` must be double precision expressions.
    """
    packed = " || ".join(f"float8send(({column})::float8)" for column in columns)
    sql = (f"SELECT ({order}) / {int(group_size)} AS part, string_agg({packed}, ''::bytea ORDER BY {order}) "
           f"FROM {source} GROUP BY 1 ORDER BY 1")
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        parts = [np.frombuffer(bytes(blob), dtype=">f8") for _, blob in cursor.fetchall()]
    if not parts:
        return np.zeros((0, len(columns)), dtype=np.float64)
    return np.concatenate(parts).astype(np.float64).reshape(-1, len(columns))


@dataclass(frozen=True)
class CategoryTallies:
    """Counted votes per category and ordered pair, from the kept tallies plus imported battles.

    Same interface as ``VoteCells`` for the refresh: ``votes_per_category``, ``outcomes``,
    ``digest_parts``, ``stats``.
    """

    names: tuple[str, ...]
    # category -> (a, b, winner, count), a and b indexes into names, one entry per outcome seen
    per_category: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    stats: dict = field(default_factory=dict)
    _outcomes: dict = field(default_factory=dict, compare=False, repr=False)  # category -> PairOutcomes, as built

    def votes_per_category(self) -> dict[str, int]:
        totals = {category: 0 for category in cats.FIXED_CATEGORIES}
        for category, (_, _, _, count) in self.per_category.items():
            totals[category] = int(count.sum())
        return totals

    def outcomes(self, category: str) -> PairOutcomes:
        found = self._outcomes.get(category)
        if found is None:
            empty = np.zeros(0, dtype=np.int64)
            a, b, winner, count = self.per_category.get(category, (empty, empty, empty, empty))
            found = self._outcomes[category] = outcomes_from_arrays(self.names, a, b, winner, count)
        return found

    def digest_parts(self, category: str) -> list[bytes]:
        return outcome_digest_parts(self.outcomes(category))


def tallied_vote_cells(*, config: LeaderboardSettings, status_counts: dict) -> CategoryTallies:
    """``vote_cells`` from the tallies the refresh keeps (PostgreSQL; call after ``tally_update``)."""
    tally = "leaderboard_votetally"
    nonzero = "wins_a + wins_b + ties + bothbad > 0"
    # One value per category: its pairs' rows packed as big-endian bigints, unpacked with numpy (in
    # any order: the outcomes are sorted by pair when built).
    packed = ("string_agg(int8send(model_a_id) || int8send(model_b_id) || int8send(wins_a::bigint) || "
              "int8send(wins_b::bigint) || int8send(ties::bigint) || int8send(bothbad::bigint), ''::bytea)")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT category, {packed} FROM {tally} WHERE {nonzero} GROUP BY category "
                           f"ORDER BY category")
            blobs = [(category, bytes(blob)) for category, blob in cursor.fetchall()]
        imported = list(counted_imported(config=config)
                        .values_list("model_a", "model_b", "winner", "language", "is_coding")
                        .annotate(multi=_flag(Q(turns__gt=1)),
                                  long=_flag(Q(prompt_chars__gt=config.long_prompt_chars)), n=Count("id"))
                        .order_by())
        imported_total = ImportedBattle.objects.count()
    id_names = contender_names()
    imported_cells = _cells_from_rows(imported)
    tables = [(category, np.frombuffer(blob, dtype=">i8").astype(np.int64).reshape(-1, 6)) for category, blob in blobs]
    seen = np.unique(np.concatenate([table[:, :2].reshape(-1) for _, table in tables])) if tables else []
    names = tuple(sorted({id_names[int(k)] for k in seen} | set(imported_cells.names)))
    index = {name: k for k, name in enumerate(names)}
    ids = np.array(sorted(id_names), dtype=np.int64)
    id_index = np.array([index.get(id_names[int(k)], -1) for k in ids], dtype=np.int64)
    per_category: dict[str, tuple] = {}
    winners = np.arange(4, dtype=np.int64)
    for category, rows in tables:
        a = id_index[np.searchsorted(ids, rows[:, 0])]
        b = id_index[np.searchsorted(ids, rows[:, 1])]
        counts = rows[:, 2:6]
        per_category[category] = (np.repeat(a, 4), np.repeat(b, 4), np.tile(winners, len(rows)), counts.reshape(-1))
    counted_imported_votes = 0
    if len(imported_cells.count):
        remap = np.array([index[name] for name in imported_cells.names], dtype=np.int64)
        categories = list(cats.FIXED_CATEGORIES) + [cats.LANGUAGE_PREFIX + code for code in imported_cells.languages
                                                     if code]
        for category in categories:
            keep = imported_cells.mask(category)
            if not keep.any():
                continue
            extra = (remap[imported_cells.a[keep]], remap[imported_cells.b[keep]], imported_cells.winner[keep],
                     imported_cells.count[keep])
            have = per_category.get(category)
            per_category[category] = extra if have is None else tuple(
                np.concatenate([x, y]) for x, y in zip(have, extra))
        counted_imported_votes = int(imported_cells.count.sum())
    counts = {STATUS_NAMES[int(code)]: int(n) for code, n in status_counts.items()}
    stats = {
        "votes_native": sum(counts.values()), "counted_native": counts.get(COUNTED, 0),
        **{f"removed_{name}": counts.get(name, 0) for name in
           ("not_anonymous", "failed", "identity_leak", "daily_cap", "duplicate_prompt")},
        "imported_total": imported_total, "counted_imported": counted_imported_votes,
    }
    return CategoryTallies(names=names, per_category=per_category, stats=stats)


def _tune_for_aggregation() -> None:
    # PostgreSQL, for this transaction only: enough memory to hash the groups instead of sorting
    # them on disk, and no JIT compilation (it costs more than it saves on a query run once).
    work_mem = getattr(settings, "LEADERBOARD_SQL_WORK_MEM", "64MB")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if work_mem:
                cursor.execute("SELECT set_config('work_mem', %s, true)", [str(work_mem)])
            cursor.execute("SELECT set_config('jit', 'off', true)")


def _cells_from_rows(rows: list[tuple]) -> VoteCells:
    """Rows ``(name_a, name_b, winner, language, coding, multi_turn, long_prompt, count)`` as arrays."""
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return VoteCells(names=(), a=empty, b=empty, winner=empty, count=empty, language=empty, languages=(),
                         coding=empty.astype(bool), multi_turn=empty.astype(bool), long_prompt=empty.astype(bool))
    name_a, name_b, winner, language, coding, multi, long, count = zip(*rows)
    names = tuple(sorted(set(name_a) | set(name_b)))
    index = {name: k for k, name in enumerate(names)}
    languages = tuple(sorted({code or "" for code in language}))
    language_index = {code: k for k, code in enumerate(languages)}
    size = len(rows)

    def ints(values, lookup) -> np.ndarray:
        return np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=size)

    return VoteCells(
        names=names, a=ints(name_a, index), b=ints(name_b, index), winner=ints(winner, WINNER_INDEX),
        count=np.array(count, dtype=np.int64), language=ints((code or "" for code in language), language_index),
        languages=languages, coding=np.array(coding, dtype=bool), multi_turn=np.array(multi, dtype=bool),
        long_prompt=np.array(long, dtype=bool),
    )


@dataclass(frozen=True)
class StyleRows:
    """Counted votes one by one with the style counts of both answers (style control needs battles)."""

    model_a: np.ndarray  # names (objects), one per battle
    model_b: np.ndarray
    winner: np.ndarray
    counts_a: np.ndarray  # battles x 4
    counts_b: np.ndarray
    cells: VoteCells  # one cell per battle (count 1), for the category masks
    without_style: int  # counted votes left out because their answers are not known

    def select(self, category: str) -> tuple[list[str], list[str], list[str], np.ndarray, np.ndarray]:
        keep = np.flatnonzero(self.cells.mask(category))
        return (self.model_a[keep].tolist(), self.model_b[keep].tolist(), self.winner[keep].tolist(),
                self.counts_a[keep], self.counts_b[keep])


def _tallied_style_arrays(config: LeaderboardSettings) -> tuple[np.ndarray, list[str]]:
    """Counted votes with their style counts, through the statuses the tallies keep (PostgreSQL), in
    battle order, as numbers: (battles x 16) float64 array and the language codes its column 3 indexes.

    Columns: model A id, model B id, winner (WINNERS index), language, coding, multi-turn, long
    prompt, both style counts known, then the four counts of A and the four of B.
    """
    record = VoteRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT category FROM leaderboard_votetally WHERE category LIKE %s",
                       [cats.LANGUAGE_PREFIX + "%"])
        languages = [""] + sorted(row[0][len(cats.LANGUAGE_PREFIX):] for row in cursor.fetchall())
    winners = " ".join(f"WHEN '{winner}' THEN {k}" for winner, k in WINNER_INDEX.items())
    known = ("jsonb_typeof(r.style_a) = 'array' AND jsonb_typeof(r.style_b) = 'array' "
             "AND jsonb_array_length(r.style_a) > 0 AND jsonb_array_length(r.style_b) > 0")
    columns = ["r.model_a_id", "r.model_b_id", f"CASE r.winner {winners} END",
               "COALESCE(array_position(%s::text[], r.language::text) - 1, -1)", "r.is_coding::int",
               "(r.turns > 1)::int", "(r.prompt_chars > %s)::int", f"CASE WHEN {known} THEN 1 ELSE 0 END",
               *(f"COALESCE((r.{side}->>{k})::float8, 0)" for side in ("style_a", "style_b") for k in range(4))]
    source = (f"{record} r JOIN leaderboard_votestatus st ON st.battle_id = r.battle_id AND st.status = 0")
    with transaction.atomic():
        _tune_for_aggregation()
        table = packed_float_rows(columns=columns, source=source, order="r.battle_id",
                                  params=[languages, int(config.long_prompt_chars)])
    if (table[:, 3] < 0).any():
        raise ValueError("a counted vote's language has no tally")
    return table, languages


def style_rows(*, config: LeaderboardSettings, tallied: bool = False) -> StyleRows:
    """Counted votes with style counts; ``tallied``: read them through the kept vote statuses."""
    long_chars = config.long_prompt_chars
    id_names = contender_names()
    rows, counts_a, counts_b = [], [], []
    without = 0
    native_table = None
    if tallied:
        native_table, native_languages = _tallied_style_arrays(config)
        known = native_table[:, 7] == 1
        without += int((~known).sum())
        native_table = native_table[known]
    else:
        native = counted_record_rows(config=config, columns=[
            "model_a_id", "model_b_id", "winner", "language", "is_coding", "turns", "prompt_chars", "style_a",
            "style_b"])
        for a_id, b_id, winner, language, coding, turns, chars, style_a, style_b in native:
            if not style_a or not style_b:
                without += 1
                continue
            rows.append((id_names[a_id], id_names[b_id], winner, language, coding, turns > 1, chars > long_chars, 1))
            counts_a.append(style_a)
            counts_b.append(style_b)
    imported = counted_imported(config=config).order_by().values_list(
        "model_a", "model_b", "winner", "language", "is_coding", "turns", "prompt_chars", "style_a", "style_b")
    for model_a, model_b, winner, language, coding, turns, chars, style_a, style_b in imported.iterator(chunk_size=20000):
        if not style_a or not style_b:
            without += 1
            continue
        rows.append((model_a, model_b, winner, language, coding, turns > 1, chars is not None and chars > long_chars, 1))
        counts_a.append(style_a)
        counts_b.append(style_b)
    listed = _cells_from_rows(rows)
    listed_a = np.array(counts_a, dtype=float).reshape(-1, 4)
    listed_b = np.array(counts_b, dtype=float).reshape(-1, 4)
    if native_table is None or not len(native_table):
        cells, all_a, all_b = listed, listed_a, listed_b
    else:
        ids_a = native_table[:, 0].astype(np.int64)
        ids_b = native_table[:, 1].astype(np.int64)
        present = np.unique(np.concatenate([ids_a, ids_b]))
        names = tuple(sorted({id_names[int(k)] for k in present} | set(listed.names)))
        index = {name: k for k, name in enumerate(names)}
        lookup = np.array([index[id_names[int(k)]] for k in present], dtype=np.int64)
        languages = tuple(sorted(set(native_languages) | set(listed.languages)))
        language_index = {code: k for k, code in enumerate(languages)}
        native_language = np.array([language_index[code] for code in native_languages], dtype=np.int64)
        remap_names = np.array([index[name] for name in listed.names], dtype=np.int64)
        remap_languages = np.array([language_index[code] for code in listed.languages], dtype=np.int64)
        n = len(native_table)
        cells = VoteCells(
            names=names,
            a=np.concatenate([lookup[np.searchsorted(present, ids_a)], remap_names[listed.a] if len(listed.a)
                              else listed.a]),
            b=np.concatenate([lookup[np.searchsorted(present, ids_b)], remap_names[listed.b] if len(listed.b)
                              else listed.b]),
            winner=np.concatenate([native_table[:, 2].astype(np.int64), listed.winner]),
            count=np.concatenate([np.ones(n, dtype=np.int64), listed.count]),
            language=np.concatenate([native_language[native_table[:, 3].astype(np.int64)],
                                     remap_languages[listed.language] if len(listed.language) else listed.language]),
            languages=languages,
            coding=np.concatenate([native_table[:, 4] == 1, listed.coding]),
            multi_turn=np.concatenate([native_table[:, 5] == 1, listed.multi_turn]),
            long_prompt=np.concatenate([native_table[:, 6] == 1, listed.long_prompt]),
        )
        all_a = np.concatenate([native_table[:, 8:12], listed_a])
        all_b = np.concatenate([native_table[:, 12:16], listed_b])
    names_array = np.array(cells.names, dtype=object)
    winners_array = np.array(WINNERS, dtype=object)
    return StyleRows(
        model_a=names_array[cells.a] if len(cells.a) else np.zeros(0, dtype=object),
        model_b=names_array[cells.b] if len(cells.b) else np.zeros(0, dtype=object),
        winner=winners_array[cells.winner] if len(cells.winner) else np.zeros(0, dtype=object),
        counts_a=all_a, counts_b=all_b, cells=cells, without_style=without,
    )


# --------------------------------------------------------------------------------------------------
# Snapshots


def snapshot_latest(*, category: str, style_control: bool = False) -> RatingSnapshot | None:
    return (RatingSnapshot.objects.filter(category=category, style_control=style_control,
                                          status=SnapshotStatus.READY).order_by("-created_at", "-id").first())


def snapshot_get(*, snapshot_id: int) -> RatingSnapshot | None:
    return RatingSnapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.READY).first()


def snapshot_categories() -> list[tuple[str, str]]:
    """Categories with at least one ready snapshot, overall first, then fixed ones, then languages."""
    present = set(RatingSnapshot.objects.filter(status=SnapshotStatus.READY).values_list("category", flat=True)
                  .distinct())
    fixed = [c for c in cats.FIXED_CATEGORIES if c in present]
    languages = sorted((c for c in present if c not in cats.FIXED_CATEGORIES), key=cats.category_label)
    return [(c, cats.category_label(c)) for c in fixed + languages]


def elo_ratings(*, category: str) -> dict[str, float]:
    return dict(EloRating.objects.filter(category=category).values_list("model_name", "rating"))


# --------------------------------------------------------------------------------------------------
# Leaderboard rows with contender metadata and speed


class Median(Aggregate):
    # PostgreSQL computes medians itself; other databases fall back to Python (see speed_medians).
    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def speed_medians(*, contender_ids: Iterable[int], since: datetime | None = None
                  ) -> dict[int, tuple[float | None, float | None]]:
    """Median time to first token and time per output token (ms) of each contender's finished answers
    (those finished after ``since``, when given)."""
    ids = list(set(contender_ids))
    if not ids:
        return {}
    done = Generation.objects.filter(contender_id__in=ids, status=GenerationStatus.DONE)
    if since is not None:
        done = done.filter(finished_at__gte=since)
    if connection.vendor == "postgresql":
        rows = done.values("contender_id").annotate(
            ttft=Median("time_to_first_token_ms"), tpot=Median("time_per_output_token_ms")).order_by()
        return {row["contender_id"]: (row["ttft"], row["tpot"]) for row in rows}
    values: dict[int, tuple[list, list]] = {}
    for contender_id, ttft, tpot in done.values_list("contender_id", "time_to_first_token_ms",
                                                     "time_per_output_token_ms"):
        first, per = values.setdefault(contender_id, ([], []))
        if ttft is not None:
            first.append(ttft)
        if tpot is not None:
            per.append(tpot)
    return {k: (statistics.median(f) if f else None, statistics.median(p) if p else None)
            for k, (f, p) in values.items()}


SIZE_BUCKETS = (
    ("small", "under 10B", 0, 10),
    ("medium", "10B to 40B", 10, 40),
    ("large", "40B to 100B", 40, 100),
    ("xlarge", "100B and more", 100, math.inf),
    ("unknown", "unknown size", None, None),
)


def size_bucket(parameter_count_b: Decimal | float | None) -> str:
    if parameter_count_b is None:
        return "unknown"
    value = float(parameter_count_b)
    for key, _, low, high in SIZE_BUCKETS[:-1]:
        if low <= value < high:
            return key
    return "unknown"


@dataclass(frozen=True)
class TableFilters:
    licence: str = ""
    commercial: str = ""  # "yes", "no" or "" (any)
    size: str = ""  # a SIZE_BUCKETS key or ""
    flavour: str = ""
    show_provisional: bool = True


SORT_KEYS = {
    "rank": "rank_ub", "model": "model", "rating": "rating", "ci": "ci_width", "votes": "votes",
    "win_rate": "win_rate", "elo": "elo", "organisation": "organisation", "licence": "licence",
    "size": "parameter_count_b", "flavour": "flavour", "context": "context_length", "ttft": "median_ttft_ms",
    "tpot": "median_tpot_ms",
}


def snapshot_table(*, snapshot: RatingSnapshot, filters: TableFilters = TableFilters(), sort: str = "rating",
                   descending: bool | None = None) -> list[dict]:
    """The snapshot's rows joined with what is known about each model now, filtered and sorted.

    Rows without a contender (models seen only in imported battles) have no metadata: they pass
    only filters left at "any".
    """
    rows = list(SnapshotRow.objects.filter(snapshot=snapshot).select_related("contender").order_by("position"))
    table = [_table_row(row) for row in rows]
    table = [row for row in table if _passes(row, filters)]
    key = SORT_KEYS.get(sort, "rating")
    if descending is None:
        descending = key in {"rating", "votes", "win_rate", "elo"}
    present = [row for row in table if row[key] not in (None, "")]
    missing = [row for row in table if row[key] in (None, "")]
    present.sort(key=lambda row: (row[key].lower() if isinstance(row[key], str) else row[key]), reverse=descending)
    return present + missing  # unknown values last, whichever the direction


def _table_row(row: SnapshotRow) -> dict:
    contender = row.contender
    size = float(contender.parameter_count_b) if contender and contender.parameter_count_b is not None else None
    return {
        "rank_ub": row.rank_ub, "model": row.model_name, "contender_id": row.contender_id, "rating": row.rating,
        "ci_lower": row.ci_lower, "ci_upper": row.ci_upper,
        "ci_plus": None if row.ci_upper is None else row.ci_upper - row.rating,
        "ci_minus": None if row.ci_lower is None else row.rating - row.ci_lower,
        "ci_width": None if row.ci_upper is None or row.ci_lower is None else row.ci_upper - row.ci_lower,
        "votes": row.votes, "win_rate": row.win_rate, "elo": row.elo, "provisional": row.provisional,
        "organisation": contender.organisation if contender else "",
        "licence": contender.licence if contender else "",
        "commercial_use": contender.commercial_use if contender else None,
        "parameter_count_b": size, "size_bucket": size_bucket(size),
        "flavour": contender.flavour if contender else "",
        "context_length": contender.context_length if contender else None,
        "median_ttft_ms": row.median_ttft_ms, "median_tpot_ms": row.median_tpot_ms,
    }


def _passes(row: dict, filters: TableFilters) -> bool:
    if not filters.show_provisional and row["provisional"]:
        return False
    if filters.licence and row["licence"] != filters.licence:
        return False
    if filters.commercial == "yes" and row["commercial_use"] is not True:
        return False
    if filters.commercial == "no" and row["commercial_use"] is not False:
        return False
    if filters.size and row["size_bucket"] != filters.size:
        return False
    if filters.flavour and row["flavour"] != filters.flavour:
        return False
    return True


def filter_choices() -> dict[str, list]:
    """Values the filter controls offer, from the contenders registered."""
    contenders = ArenaModel.objects.all()
    return {
        "licences": sorted({c.licence for c in contenders if c.licence}),
        "sizes": [(key, label) for key, label, _, _ in SIZE_BUCKETS],
        "flavours": sorted({c.flavour for c in contenders if c.flavour}),
    }


# --------------------------------------------------------------------------------------------------
# Charts and model pages


def score_history(*, category: str, style_control: bool = False, model_name: str | None = None,
                  limit: int = 200) -> dict[str, list[dict]]:
    """Rating with interval per model over the last ``limit`` ready snapshots of a category."""
    snapshot_ids = list(RatingSnapshot.objects.filter(category=category, style_control=style_control,
                                                      status=SnapshotStatus.READY)
                        .order_by("-created_at", "-id").values_list("id", flat=True)[:limit])
    rows = SnapshotRow.objects.filter(snapshot_id__in=snapshot_ids)
    if model_name is not None:
        rows = rows.filter(model_name=model_name)
    series: dict[str, list[dict]] = {}
    for name, snapshot_id, created_at, rating, lower, upper, votes in (
            rows.order_by("snapshot__created_at", "snapshot_id")
            .values_list("model_name", "snapshot_id", "snapshot__created_at", "rating", "ci_lower", "ci_upper",
                         "votes")):
        series.setdefault(name, []).append({"snapshot": snapshot_id, "at": created_at.isoformat(), "rating": rating,
                                            "ci_lower": lower, "ci_upper": upper, "votes": votes})
    return series


def snapshot_matrices(*, snapshot: RatingSnapshot) -> dict:
    return snapshot.matrices or {"names": [], "battle_counts": [], "win_fraction": [], "predicted_win": []}


def model_matchups(*, snapshot: RatingSnapshot, model_name: str) -> list[dict]:
    """The model's record against each opponent it met in the snapshot: battles, observed and predicted."""
    matrices = snapshot_matrices(snapshot=snapshot)
    names = matrices.get("names", [])
    if model_name not in names:
        return []
    k = names.index(model_name)
    matchups = []
    for j, opponent in enumerate(names):
        battles = matrices["battle_counts"][k][j]
        if j == k or not battles:
            continue
        matchups.append({"opponent": opponent, "battles": battles, "win_fraction": matrices["win_fraction"][k][j],
                         "predicted_win": matrices["predicted_win"][k][j]})
    matchups.sort(key=lambda m: -m["battles"])
    return matchups


def speed_window_start() -> datetime | None:
    """Speed figures cover answers finished in the last LEADERBOARD_SPEED_WINDOW_DAYS days (0: all)."""
    days = getattr(settings, "LEADERBOARD_SPEED_WINDOW_DAYS", 30)
    return timezone.now() - timedelta(days=days) if days else None


def model_speed(*, contender: ArenaModel | None, samples: int = 500) -> dict:
    """Medians and recent samples of the contender's time to first token and per output token."""
    if contender is None:
        return {"median_ttft_ms": None, "median_tpot_ms": None, "ttft": [], "tpot": [], "answers": 0}
    since = speed_window_start()
    done = Generation.objects.filter(contender=contender, status=GenerationStatus.DONE)
    if since is not None:
        done = done.filter(finished_at__gte=since)
    medians = speed_medians(contender_ids=[contender.pk], since=since).get(contender.pk, (None, None))
    recent = list(done.order_by("-finished_at", "-id").values_list("time_to_first_token_ms",
                                                                   "time_per_output_token_ms")[:samples])
    return {"median_ttft_ms": medians[0], "median_tpot_ms": medians[1], "answers": done.count(),
            "ttft": [t for t, _ in recent if t is not None], "tpot": [p for _, p in recent if p is not None]}


def contender_by_name(*, model_name: str) -> ArenaModel | None:
    return ArenaModel.objects.filter(display_name=model_name).first()


def model_is_known(*, model_name: str) -> bool:
    return (SnapshotRow.objects.filter(model_name=model_name, snapshot__status=SnapshotStatus.READY).exists()
            or ArenaModel.objects.filter(display_name=model_name).exists())


def snapshot_row_of(*, snapshot: RatingSnapshot, model_name: str) -> SnapshotRow | None:
    return SnapshotRow.objects.filter(snapshot=snapshot, model_name=model_name).first()



def snapshot_summary(*, snapshot: RatingSnapshot) -> dict:
    """What a page or an API answer says about the snapshot it shows."""
    params = snapshot.params or {}
    return {
        "id": snapshot.pk, "category": snapshot.category, "category_label": cats.category_label(snapshot.category),
        "style_control": snapshot.style_control, "created_at": snapshot.created_at.isoformat(),
        "battles": snapshot.battles, "votes": snapshot.votes_read,
        "bootstrap_rounds": params.get("bootstrap_rounds"), "confidence": params.get("confidence"),
        "seed": params.get("seed"), "min_votes": params.get("min_votes"), "ties": params.get("ties"),
        "bothbad": params.get("bothbad"), "filters": params.get("filters", {}),
        "filter_counts": params.get("filter_counts", {}),
        "style": snapshot.style or None,
    }


def snapshots_recent(*, category: str | None = None, limit: int = 100) -> QuerySet[RatingSnapshot]:
    snapshots = RatingSnapshot.objects.all()
    if category:
        snapshots = snapshots.filter(category=category)
    return snapshots.order_by("-created_at", "-id")[:limit]


def model_categories(*, model_name: str) -> list[dict]:
    """The model's row in the latest snapshot of each category (plain and style-controlled)."""
    found = []
    for category, label in snapshot_categories():
        for style_control in (False, True):
            snapshot = snapshot_latest(category=category, style_control=style_control)
            row = snapshot and snapshot_row_of(snapshot=snapshot, model_name=model_name)
            if row:
                found.append({"category": category, "category_label": label, "style_control": style_control,
                              "snapshot": snapshot.pk, "rating": row.rating, "ci_lower": row.ci_lower,
                              "ci_upper": row.ci_upper, "rank_ub": row.rank_ub, "votes": row.votes,
                              "win_rate": row.win_rate, "elo": row.elo, "provisional": row.provisional})
    return found


def contender_card(contender: ArenaModel | None) -> dict | None:
    if contender is None:
        return None
    return {"id": contender.pk, "display_name": contender.display_name, "organisation": contender.organisation,
            "licence": contender.licence, "commercial_use": contender.commercial_use,
            "parameter_count_b": None if contender.parameter_count_b is None else float(contender.parameter_count_b),
            "flavour": contender.flavour, "context_length": contender.context_length,
            "knowledge_cutoff": contender.knowledge_cutoff.isoformat() if contender.knowledge_cutoff else None,
            "enabled": contender.enabled}


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness results: benchmark columns, imported files, correlation with the arena score


def column_set_from_model(column_set: BenchmarkColumnSet):
    """The admin-defined set as a ``ColumnSet`` (raises ``PresetError`` if it cannot be used)."""
    specs, used = [], set()
    for column in column_set.columns.all():
        key = slugify(column.label) or f"col{column.pk}"
        if key in used or key == harness.AVERAGE_KEY:
            key = f"col{column.pk}"
        used.add(key)
        spec = {"key": key, "task": column.task.strip(), "metric": column.metric_name, "filter": column.filter_name,
                "label": column.label, "scale": column.scale}
        if column.n_shot is not None:
            spec["n_shot"] = column.n_shot
        specs.append(spec)
    return harness.custom_column_set(column_set.key, column_set.name, specs, average=column_set.average,
                                     description=column_set.description)


def column_set_choices() -> list[tuple[str, str]]:
    """Benchmark column sets the leaderboard offers: the built-in presets, then the admin-defined ones."""
    choices = [(key, preset.label) for key, preset in harness.PRESETS.items()]
    usable = BenchmarkColumnSet.objects.filter(columns__isnull=False).distinct().order_by("name")
    choices += [(item.key, item.name) for item in usable.only("key", "name")]
    return choices


def imported_column_set():
    """One raw-score column per (task, metric, filter) imported so far (no average: the units differ)."""
    keys = (HarnessResult.objects.values_list("task", "metric", "filter").distinct().order_by("task", "metric",
                                                                                                 "filter"))
    specs = [{"key": f"{task}:{metric},{filter_name}", "task": task, "metric": metric, "filter": filter_name,
              "label": f"{task} {metric}" + ("" if filter_name == "none" else f" ({filter_name})")}
             for task, metric, filter_name in keys]
    if not specs:
        return None
    return harness.custom_column_set(IMPORTED_COLUMN_SET_KEY, "Every imported benchmark (raw scores)", specs,
                                     average=False)


def column_set_get(*, key: str, allow_imported: bool = False):
    """A built-in preset or an admin-defined set by key; None if there is none (or it is unusable)."""
    if key in harness.PRESETS:
        return harness.PRESETS[key]
    if allow_imported and key == IMPORTED_COLUMN_SET_KEY:
        return imported_column_set()
    found = BenchmarkColumnSet.objects.filter(key=key).prefetch_related("columns").first()
    if found is None:
        return None
    try:
        return column_set_from_model(found)
    except harness.PresetError:
        return None


def _harness_row(result: HarnessResult, harness_file: HarnessFile, model_name: str):
    return harness.HarnessRow(
        model_name=model_name, task=result.task, metric=result.metric, filter=result.filter, value=result.value,
        stderr=result.stderr, n_shot=result.n_shot, limit=result.limit,
        harness_version=harness_file.harness_version, source_sha256=harness_file.sha256,
        source_name=harness_file.file_name, is_group=result.is_group, higher_is_better=result.higher_is_better,
        task_version=result.task_version, samples_original=result.samples_original,
        samples_effective=result.samples_effective, evaluated_at=harness_file.evaluated_at,
    )


def harness_rows(*, contender_ids: Iterable[int], tasks: Iterable[str] | None = None) -> dict[int, list]:
    """Every imported result of the contenders (of ``tasks`` only, when given), as ``HarnessRow``s."""
    ids = [pk for pk in set(contender_ids) if pk is not None]
    if not ids:
        return {}
    results = HarnessResult.objects.filter(file__contender_id__in=ids).select_related("file", "file__contender")
    if tasks is not None:
        results = results.filter(task__in=list(set(tasks)))
    rows: dict[int, list] = {}
    for result in results.order_by("file_id", "id"):
        harness_file = result.file
        rows.setdefault(harness_file.contender_id, []).append(
            _harness_row(result, harness_file, harness_file.contender.display_name))
    return rows


def benchmark_results(*, column_set, contender_ids: Iterable[int]) -> dict[int, object]:
    """``{contender id: PresetResult}`` for every contender given (empty columns when nothing is imported)."""
    ids = [pk for pk in set(contender_ids) if pk is not None]
    rows = harness_rows(contender_ids=ids, tasks=column_set.tasks())
    return {pk: harness.evaluate(column_set, rows.get(pk, [])) for pk in ids}


def benchmark_header(column_set) -> list[dict]:
    """The benchmark columns a table shows, the average (when the set has one) last."""
    columns = [{"key": column.key, "label": column.label, "description": column.description,
                "n_shot": column.n_shot} for column in column_set.columns]
    if column_set.average:
        columns.append({"key": harness.AVERAGE_KEY, "label": "Average", "n_shot": None,
                        "description": f"plain mean of the {len(column_set.columns)} columns"})
    return columns


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(value) -> dict:
    """A column value plus what a table cell shows: the number, the stderr on hover, the warning notes."""
    data = value.to_dict()
    data["warn"] = value.warn
    data["display"] = _number(value.value)
    hover = []
    if value.stderr is not None:
        hover.append(f"± {_number(value.stderr)} (standard error)")
    if value.raw is not None and value.raw != value.value:
        hover.append(f"raw {_number(value.raw)}")
    if value.n_shot is not None:
        hover.append(f"{value.n_shot}-shot")
    data["hover"] = ", ".join(hover)
    data["warning"] = "; ".join(value.notes) if value.warn else ""
    return data


def _missing_cells(header: list[dict], note: str) -> list[dict]:
    return [{"key": column["key"], "label": column["label"], "value": None, "stderr": None, "raw": None,
             "n_shot": None, "flags": ["missing"], "notes": [note], "sources": [], "warn": False, "display": "",
             "hover": note, "warning": ""}
            for column in header]


def table_add_benchmarks(*, table: list[dict], column_set, sort_key: str | None = None,
                         descending: bool = True) -> list[dict]:
    """Each row of a leaderboard table gets ``benchmarks``: one cell per column of the set, in order.

    With ``sort_key`` (a column key of the set) the rows are sorted by that column, unknown values last.
    """
    header = benchmark_header(column_set)
    results = benchmark_results(column_set=column_set, contender_ids=[row["contender_id"] for row in table])
    for row in table:
        result = results.get(row["contender_id"])
        if result is None:
            row["benchmarks"] = _missing_cells(header, "not a registered contender: no benchmark results")
            continue
        cells = [_cell(value) for value in result.columns]
        if result.average is not None:
            cells.append(_cell(result.average))
        row["benchmarks"] = cells
    if sort_key is not None:
        position = next((k for k, column in enumerate(header) if column["key"] == sort_key), None)
        if position is not None:
            present = [row for row in table if row["benchmarks"][position]["value"] is not None]
            missing = [row for row in table if row["benchmarks"][position]["value"] is None]
            present.sort(key=lambda row: row["benchmarks"][position]["value"], reverse=descending)
            table[:] = present + missing
    return table


def model_harness_files(*, contender: ArenaModel | None) -> list[dict]:
    """Every results file imported for the contender, newest first, each with its rows."""
    if contender is None:
        return []
    files = (HarnessFile.objects.filter(contender=contender).select_related("imported_by")
             .prefetch_related("results").order_by("-imported_at", "-id"))
    found = []
    for harness_file in files:
        found.append({
            "id": harness_file.pk, "file_name": harness_file.file_name, "sha256": harness_file.sha256,
            "harness_version": harness_file.harness_version, "harness_model_name": harness_file.harness_model_name,
            "model_source": harness_file.model_source,
            "evaluated_at": harness_file.evaluated_at.isoformat() if harness_file.evaluated_at else None,
            "imported_at": harness_file.imported_at.isoformat(),
            "imported_by": harness_file.imported_by.get_username() if harness_file.imported_by else None,
            "limit": harness_file.limit, "warnings": harness_file.warnings,
            "results": [{"task": result.task, "metric": result.metric, "filter": result.filter,
                         "value": result.value, "stderr": result.stderr, "n_shot": result.n_shot,
                         "limit": result.limit, "used_limit": result.used_limit, "is_group": result.is_group}
                        for result in harness_file.results.all()],
        })
    return found


def benchmark_correlations(*, column_set, min_models: int | None = None, min_votes: int | None = None,
                           bootstrap_rounds: int = 1000, seed: int | None = None) -> dict:
    """Spearman and Kendall correlation of each column with the arena score (latest overall snapshot).

    Models count when they are registered contenders with enough votes: not provisional in that
    snapshot, or with at least ``min_votes`` votes when given. The bootstrap seed defaults to
    LEADERBOARD_BOOTSTRAP_SEED, else the snapshot's id, so a page shows the same intervals on every
    view of the same snapshot.
    """
    snapshot = snapshot_latest(category=cats.OVERALL)
    base = {"snapshot": None, "column_set": None, "columns": [], "correlations": [], "models": 0,
            "min_models": min_models or harness.correlation.DEFAULT_MIN_MODELS, "min_votes": min_votes,
            "bootstrap_rounds": bootstrap_rounds}
    if column_set is not None:
        base["column_set"] = {"key": column_set.key, "label": column_set.label,
                              "description": column_set.description}
        base["columns"] = benchmark_header(column_set)
    if snapshot is None:
        return base
    base["snapshot"] = {"id": snapshot.pk, "created_at": snapshot.created_at.isoformat(),
                        "min_votes": (snapshot.params or {}).get("min_votes")}
    if column_set is None:
        return base
    rows = SnapshotRow.objects.filter(snapshot=snapshot, contender__isnull=False)
    rows = list(rows.filter(votes__gte=min_votes) if min_votes is not None else rows.filter(provisional=False))
    arena = {row.model_name: row.rating for row in rows}
    base["models"] = len(arena)
    results = benchmark_results(column_set=column_set, contender_ids=[row.contender_id for row in rows])
    by_name = {row.model_name: results[row.contender_id] for row in rows}
    table = harness.column_table(by_name)
    labels = {column["key"]: column["label"] for column in base["columns"]}
    if seed is None:
        configured = getattr(settings, "LEADERBOARD_BOOTSTRAP_SEED", None)
        seed = int(configured) if configured is not None else snapshot.pk
    correlations = harness.correlate_columns(arena, {key: table.get(key, {}) for key in labels},
                                             min_models=base["min_models"], bootstrap_rounds=bootstrap_rounds,
                                             seed=seed)
    base["seed"] = seed
    base["correlations"] = [dict(item.to_dict(), label=labels.get(item.column, item.column))
                            for item in correlations]
    return base


def ratings_queue_waiting() -> int | None:
    """Refreshes waiting in the ratings queue (a Redis list); None without Redis or when it does
    not answer. A worker takes a refresh as soon as it arrives (one with a countdown waits in that
    worker), so more than one waiting means no worker is taking the queue."""
    if not settings.REDIS_URL:
        return None
    from workers.dispatch import queue_lengths

    try:
        return queue_lengths([settings.RATINGS_QUEUE])[0]
    except Exception:  # noqa: BLE001 - a page must still render when Redis does not answer
        return None
