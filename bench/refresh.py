"""Leaderboard refresh from PostgreSQL at arena size: 2,000,000 votes over 200 contenders.

Starts a throwaway PostgreSQL cluster (the one ``tests/run.py`` starts), migrates, loads synthetic
battles, turns, generations, votes and vote records in SQL (``INSERT ... SELECT`` over
``generate_series``, seeded, not timed; triggers off while loading, as a restore would), then times
``leaderboard_refresh`` end to end with the configured defaults (1,000 bootstrap rounds; style
control in its own task unless LEADERBOARD_STYLE_REFRESH_SECONDS is 0): cold (no snapshot, no
tallies yet), the style-control task cold, after ``--new-votes`` new votes (written with triggers
on, as the arena writes them), after identity-leak flags set on counted battles, with nothing new,
the style task after new votes and with nothing new, then every category re-rated (``force=True``)
and overall alone; then (``--rating-processes``, 2 by default) the new-votes and every-category
runs again with the categories rated by a pool of that many processes, as the ratings worker
does. Each run is split into its parts, next to the goal. A variant is repeated
(``--repeat``) only while its runs stay within two minutes in all. Every run reads what a refresh
reads in production: the vote records, the kept tallies and their queue, the record and Elo
catch-up checks, speed medians over the generations, the latest snapshots.

    python bench/refresh.py [--votes 2000000] [--models 200] [--repeat 3] [--new-votes 1000] [--all-variants]
                            [--rating-processes 2] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.run import Postgres  # noqa: E402

GOAL_SECONDS = 3.0
REPEAT_BUDGET_SECONDS = 120.0
SEED = 0.4242  # PostgreSQL setseed() takes a value in [-1, 1]

# Synthetic arena: shares of the votes (the rest of the languages is English).
LANGUAGES = (("zh", 0.10), ("ru", 0.05), ("de", 0.05), ("fr", 0.04), ("es", 0.04), ("ja", 0.03), ("", 0.04))
CODING_SHARE = 0.20
MULTI_TURN_SHARE = 0.15
LONG_PROMPT_SHARE = 0.10
TIE_SHARE, BOTHBAD_SHARE = 0.20, 0.10
NOT_ANONYMOUS_SHARE, FAILED_SHARE, LEAK_SHARE = 0.02, 0.01, 0.005
RATERS = 10_000
HEAVY_RATERS = 10  # 1% of the votes, packed into a few days: over the daily cap
DAYS = 365


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------------
# Loading


def _table(model) -> str:
    return model._meta.db_table


def load(*, votes: int, models: int) -> dict:
    """Contenders through the ORM; users, battles, turns, generations, votes and records in SQL."""
    import numpy as np
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from arena.models import ArenaModel, BackendServer, Battle, DecodingPreset, Generation, Turn, Vote
    from leaderboard import categories as cats
    from leaderboard.models import EloRating, VoteRecord

    server = BackendServer.objects.create(name="bench", kind="tgi", base_url="http://127.0.0.1:9")
    preset = DecodingPreset.objects.create(name="bench")
    ArenaModel.objects.bulk_create([
        ArenaModel(display_name=f"model-{k:03d}", server=server, backend_model_id=f"model-{k:03d}", preset=preset,
                   enabled=True) for k in range(models)])
    model_ids = list(ArenaModel.objects.order_by("display_name").values_list("id", flat=True))
    strengths = np.random.default_rng(7).normal(0.0, 0.8, models).tolist()

    language_cases, cumulative = [], 0.0
    for code, share in LANGUAGES:
        cumulative += share
        language_cases.append(f"WHEN u_lang < {cumulative:.6f} THEN '{code}'")
    language_sql = f"CASE {' '.join(language_cases)} ELSE 'en' END"
    user, battle, turn, generation, vote, record = (_table(m) for m in (User, Battle, Turn, Generation, Vote,
                                                                          VoteRecord))
    statements = [
        ("raters", f"""
            INSERT INTO {_table(User)} (id, password, is_superuser, username, first_name, last_name, email, is_staff,
                                        is_active, date_joined)
            SELECT g, '!', false, 'rater-' || g, '', '', '', false, true, now() - interval '400 days'
            FROM generate_series(1, {RATERS + HEAVY_RATERS}) g"""),
        ("staging", f"""
            CREATE UNLOGGED TABLE bench_stage AS
            SELECT g AS id, (%(ids)s::bigint[])[ia + 1] AS model_a, (%(ids)s::bigint[])[ib + 1] AS model_b,
                   CASE WHEN g %% 100 = 0 THEN 1 + (g / 100) %% {HEAVY_RATERS}
                        ELSE {HEAVY_RATERS} + 1 + floor(u_rater * {RATERS})::int END AS rater,
                   CASE WHEN g %% 100 = 0 THEN now() - interval '10 days' + u_time * interval '5 days'
                        ELSE now() - u_time * interval '{DAYS} days' END AS voted_at,
                   CASE WHEN u_tie < {BOTHBAD_SHARE} THEN 'tie (bothbad)'
                        WHEN u_tie < {TIE_SHARE + BOTHBAD_SHARE:.6f} THEN 'tie'
                        WHEN u_win < 1 / (1 + exp((%(strength)s::float8[])[ib + 1] - (%(strength)s::float8[])[ia + 1]))
                            THEN 'model_a'
                        ELSE 'model_b' END AS winner,
                   u_flag >= {NOT_ANONYMOUS_SHARE} AS anonymous,
                   u_flag < {NOT_ANONYMOUS_SHARE + FAILED_SHARE} AND u_flag >= {NOT_ANONYMOUS_SHARE} AS failed,
                   u_flag >= 1 - {LEAK_SHARE} AS leak,
                   {language_sql} AS language,
                   u_code < {CODING_SHARE} AS is_coding,
                   CASE WHEN u_turns < {MULTI_TURN_SHARE} THEN 2 ELSE 1 END AS turns,
                   CASE WHEN u_long < {LONG_PROMPT_SHARE} THEN 1000 + floor(u_long * 40000)::int
                        ELSE 20 + floor(u_long * 900)::int END AS prompt_chars,
                   jsonb_build_array(200 + floor(u_len_a * 2500)::int, floor(u_style * 5)::int,
                                     floor(u_style * 11)::int %% 8, floor(u_style * 17)::int %% 6) AS style_a,
                   jsonb_build_array(200 + floor(u_len_b * 2500)::int, floor(u_style * 7)::int %% 5,
                                     floor(u_style * 13)::int %% 8, floor(u_style * 19)::int %% 6) AS style_b
            FROM (SELECT g, floor(random() * %(models)s)::int AS ia_raw, floor(random() * (%(models)s - 1))::int AS ib_raw,
                         random() AS u_rater, random() AS u_time, random() AS u_tie, random() AS u_win,
                         random() AS u_flag, random() AS u_lang, random() AS u_code, random() AS u_turns,
                         random() AS u_long, random() AS u_len_a, random() AS u_len_b, random() AS u_style
                  FROM generate_series(1, %(votes)s) g) raw,
                 LATERAL (SELECT ia_raw AS ia, ib_raw + (ib_raw >= ia_raw)::int AS ib) pick"""),
        ("battles", f"""
            INSERT INTO {battle} (id, public_id, rater_id, model_a_id, model_b_id, anonymous, status, identity_leak,
                                  created_at, revealed_at)
            SELECT id, gen_random_uuid(), rater, model_a, model_b, anonymous, 'voted', leak,
                   voted_at - interval '2 minutes', voted_at FROM bench_stage"""),
        ("turns", f"""
            INSERT INTO {turn} (id, battle_id, index, prompt, created_at)
            SELECT id, id, 0, 'prompt ' || id, voted_at - interval '2 minutes' FROM bench_stage"""),
        ("generations", f"""
            INSERT INTO {generation} (id, turn_id, side, contender_id, status, text, finish_reason, input_tokens,
                                      output_tokens, time_to_first_token_ms, time_per_output_token_ms,
                                      decoding_params, error_code, error_message, attempts, created_at, started_at,
                                      finished_at, deadline_at)
            SELECT 2 * s.id - 1 + side.k, s.id, side.name, CASE WHEN side.k = 0 THEN s.model_a ELSE s.model_b END,
                   CASE WHEN s.failed AND side.k = 1 THEN 'failed' ELSE 'done' END, '', 'stop', 40, 400,
                   150 + (s.id::bigint * 7919 + side.k * 104729) % 600, 15 + ((s.id::bigint * 6007 + side.k * 3001) % 400) / 10.0,
                   '{{}}', '', '', 1, s.voted_at - interval '2 minutes', s.voted_at - interval '2 minutes',
                   s.voted_at - interval '1 minute', s.voted_at + interval '3 minutes'
            FROM bench_stage s CROSS JOIN (VALUES (0, 'a'), (1, 'b')) AS side (k, name)"""),
        ("votes", f"""
            INSERT INTO {vote} (id, battle_id, rater_id, winner, created_at, seconds_after_completion)
            SELECT id, id, rater, winner, voted_at, 20 FROM bench_stage"""),
        ("vote records", f"""
            INSERT INTO {record} (battle_id, vote_id, rater_id, model_a_id, model_b_id, winner, voted_at, anonymous,
                                  failed, language, is_coding, prompt_chars, turns, prompt_hash, style_a, style_b,
                                  elo_applied, recorded_at)
            SELECT id, id, rater, model_a, model_b, winner, voted_at, anonymous, failed, language, is_coding,
                   prompt_chars, turns, md5(CASE WHEN id % 20 = 0 THEN id - 1 ELSE id END::text),
                   CASE WHEN failed THEN NULL ELSE style_a END, CASE WHEN failed THEN NULL ELSE style_b END,
                   true, voted_at FROM bench_stage"""),
    ]
    params = {"ids": model_ids, "strength": strengths, "models": models, "votes": votes}
    seconds = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # Loading only: skip the deferred foreign-key checks (the ids are right by construction).
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SELECT setseed(%s)", [SEED])
        for name, sql in statements:
            started = time.perf_counter()
            # Statements with parameters write a literal % as %%; the others are sent as they are.
            cursor.execute(sql, params if "%(" in sql else None)
            seconds[name] = time.perf_counter() - started
            say(f"  loaded {name} in {seconds[name]:.1f} s")
        cursor.execute("DROP TABLE bench_stage")
        for model in (User, Battle, Turn, Generation, Vote):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{_table(model)}', 'id'), "
                           f"(SELECT MAX(id) FROM {_table(model)}))")
    categories = list(cats.FIXED_CATEGORIES) + [cats.LANGUAGE_PREFIX + code
                                                 for code in ("en", *(c for c, _ in LANGUAGES if c))]
    EloRating.objects.bulk_create([
        EloRating(category=category, model_name=f"model-{k:03d}", contender_id=pk, rating=1000.0 + 50 * strengths[k],
                  votes=votes // models) for category in categories for k, pk in enumerate(model_ids)])
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    seconds["vacuum analyze"] = time.perf_counter() - started
    say(f"  vacuum analyze in {seconds['vacuum analyze']:.1f} s")
    return seconds


def add_votes(count: int) -> None:
    """``count`` new votes cast just now (copies of the first battles, new ids), with their records,
    written as the arena writes them: triggers on, as in production. Elo counts as applied (the
    per-vote hook does that when each vote arrives)."""
    from django.db import connection, transaction

    from arena.models import Battle, Vote
    from leaderboard.models import VoteRecord

    battle, vote, record = _table(Battle), _table(Vote), _table(VoteRecord)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(id) FROM {battle}")
        offset = cursor.fetchone()[0]
        cursor.execute(f"""
            INSERT INTO {battle} (id, public_id, rater_id, model_a_id, model_b_id, anonymous, status, identity_leak,
                                  created_at, revealed_at)
            SELECT id + %s, gen_random_uuid(), rater_id, model_a_id, model_b_id, anonymous, 'voted', identity_leak,
                   now(), now() FROM {battle} WHERE id <= %s""", [offset, count])
        cursor.execute(f"""
            INSERT INTO {vote} (id, battle_id, rater_id, winner, created_at, seconds_after_completion)
            SELECT id + %s, battle_id + %s, rater_id, winner, now() - random() * interval '1 hour', 20
            FROM {vote} WHERE battle_id <= %s""", [offset, offset, count])
        cursor.execute(f"""
            INSERT INTO {record} (battle_id, vote_id, rater_id, model_a_id, model_b_id, winner, voted_at, anonymous,
                                  failed, language, is_coding, prompt_chars, turns, prompt_hash, style_a, style_b,
                                  elo_applied, recorded_at)
            SELECT r.battle_id + %s, r.vote_id + %s, r.rater_id, r.model_a_id, r.model_b_id, r.winner, v.created_at,
                   r.anonymous, r.failed, r.language, r.is_coding, r.prompt_chars, r.turns, r.prompt_hash, r.style_a,
                   r.style_b, true, now()
            FROM {record} r JOIN {vote} v ON v.id = r.vote_id + %s WHERE r.battle_id <= %s""",
                       [offset, offset, offset, count])
        for table in (battle, vote):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")


def flag_identity_leak(count: int) -> None:
    """An answer turns out to have named its model: ``count`` counted battles get the flag."""
    from django.db import connection

    from arena.models import Battle

    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {_table(Battle)} SET identity_leak = true WHERE id IN (SELECT id FROM "
                       f"{_table(Battle)} WHERE NOT identity_leak AND anonymous ORDER BY id DESC LIMIT %s)", [count])


# --------------------------------------------------------------------------------------------------
# Timing the parts of a refresh


class Parts:
    """Exclusive wall time of wrapped functions (a part called inside another counts once, in itself)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.per_category: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []
        self.style_point_fits = 0  # point solves seen in the current style fit (two before the rounds)
        self.started = 0.0
        self.written_after: dict[str, float] = {}  # snapshot -> seconds from the start to its commit
        self.originals: dict[tuple[int, str], tuple[object, object]] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.per_category.clear()
        self.written_after.clear()
        self.started = time.perf_counter()

    def track_written(self, owner, attribute: str) -> None:
        """When each snapshot is committed (each is its own transaction: readers see it at once)."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            result = original(*args, **kwargs)
            name = kwargs["category"] + (" (style)" if kwargs.get("style_control") else "")
            self.written_after.setdefault(name, time.perf_counter() - self.started)
            return result
        setattr(owner, attribute, timed)

    @contextlib.contextmanager
    def unwrapped(self, owner, attribute: str):
        """The original function meanwhile (a rating pool pickles it by name: a wrapper would not do)."""
        wrapper = getattr(owner, attribute)
        setattr(owner, attribute, self.originals[(id(owner), attribute)][1])
        try:
            yield
        finally:
            setattr(owner, attribute, wrapper)

    def wrap(self, owner, attribute: str, label: str, *, label_of=None) -> None:
        original = getattr(owner, attribute)
        self.originals.setdefault((id(owner), attribute), (owner, original))

        @functools.wraps(original)
        def timed(*args, **kwargs):
            name = label_of(args, kwargs) if label_of else label
            self._stack.append(0.0)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                children = self._stack.pop()
                self.seconds[name] += elapsed - children
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1] += elapsed
        setattr(owner, attribute, timed)

    def track_category(self, owner, attribute: str, suffix: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.per_category[kwargs["category"] + suffix] += time.perf_counter() - started
        setattr(owner, attribute, timed)


PART_ORDER = (
    "vote records + Elo catch-up (SQL)", "input version + refresh mark (SQL)", "tallies: statuses + deltas (SQL)",
    "read tallies (SQL, packed per category)", "SQL aggregation (vote_cells)", "grouped rows -> arrays (Python)",
    "speed medians (SQL)",
    "style rows (SQL, one row per vote)", "digest + latest-snapshot check", "fit (Bradley-Terry)",
    "bootstrap (Bradley-Terry)", "rate(): counts, matrices, ranks", "style fit (with covariates + plain)",
    "style bootstrap rounds", "style snapshot rows + matrices", "write snapshots (SQL)",
    "waiting for the rating pool's processes",
)


def instrument() -> Parts:
    import leaderboard.engine as engine
    import leaderboard.engine.style as style
    from leaderboard import rating_pool, selectors, services

    parts = Parts()
    parts.wrap(services, "vote_records_fill", PART_ORDER[0])
    parts.wrap(services, "elo_catch_up", PART_ORDER[0])
    parts.wrap(services, "_input_version", PART_ORDER[1])
    parts.wrap(services, "_last_snapshot_id", PART_ORDER[1])
    parts.wrap(services, "tally_update", PART_ORDER[2])
    parts.wrap(services, "tallied_vote_cells", PART_ORDER[3])
    parts.wrap(services, "vote_cells", PART_ORDER[4])
    parts.wrap(selectors, "_cells_from_rows", PART_ORDER[5])
    parts.wrap(services, "speed_medians", PART_ORDER[6])
    parts.wrap(services, "style_rows", PART_ORDER[7])
    parts.wrap(services, "_unchanged", PART_ORDER[8])
    parts.wrap(services, "_digest", PART_ORDER[8])
    parts.wrap(engine, "fit_bradley_terry", PART_ORDER[9])
    parts.wrap(engine, "bootstrap_bradley_terry", PART_ORDER[10])
    parts.wrap(services, "rate", PART_ORDER[11])
    parts.wrap(rating_pool.Rating, "result", PART_ORDER[16])
    # Style rounds start from the point estimate (theta0); the two point fits do not.
    style_fit, style_rounds = PART_ORDER[12], PART_ORDER[13]

    def solve_label(args, kwargs):
        if kwargs.get("theta0") is not None:
            return style_rounds
        parts.style_point_fits += 1
        return style_fit

    def style_fit_label(args, kwargs):
        parts.style_point_fits = 0
        return style_fit

    parts.wrap(style, "solve_pairwise_logit", "", label_of=solve_label)
    parts.wrap(style, "_identifiability", "",
               label_of=lambda args, kwargs: style_rounds if parts.style_point_fits >= 2 else style_fit)
    parts.wrap(services, "fit_style_control", "", label_of=style_fit_label)
    parts.wrap(services, "_write_style_snapshot", PART_ORDER[14])
    parts.wrap(services, "_write_snapshot", PART_ORDER[15])
    parts.track_written(services, "_write_snapshot")  # style snapshots are written through it too
    parts.track_category(services, "_refresh_plain", "")
    parts.track_category(services, "_refresh_style", " (style)")
    return parts


def refresh_once(parts: Parts, *, force: bool, **options) -> tuple[float, dict, dict, object]:
    from leaderboard.services import leaderboard_refresh

    parts.reset()
    started = parts.started
    report = leaderboard_refresh(force=force, **options)
    total = time.perf_counter() - started
    report.written_after = dict(parts.written_after)
    return total, dict(parts.seconds), dict(parts.per_category), report


def show_parts(title: str, total: float, seconds: dict, per_category: dict, report) -> None:
    say(f"{title}: {total:.2f} s end to end ({len(report.written)} snapshots written, "
        f"{len(report.unchanged)} unchanged, {len(report.failed)} failed)")
    for name, error in report.failed:
        say(f"    FAILED {name}: {error}")
    accounted = 0.0
    for name in PART_ORDER:
        if name in seconds:
            accounted += seconds[name]
            say(f"    {name:<42} {seconds[name]:8.3f} s")
    say(f"    {'everything else (ORM reads, Python glue)':<42} {total - accounted:8.3f} s")
    if per_category:
        ranked = sorted(per_category.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {value:.2f}" for name, value in ranked[:6])
        rest = sum(value for _, value in ranked[6:])
        more = f", {len(ranked) - 6} more {rest:.2f}" if len(ranked) > 6 else ""
        say(f"    slowest categories (s, all parts): {shown}{more}")
    written = getattr(report, "written_after", {})
    if written:
        first = min(written, key=written.get)
        overall = next((name for name in ("overall", "overall (style)") if name in written), first)
        say(f"    {overall} snapshot committed (visible to readers) after {written[overall]:.2f} s; "
            f"the last of {len(written)} after {max(written.values()):.2f} s")


def summarise(label: str, totals: list[float]) -> None:
    best, median = min(totals), statistics.median(totals)
    verdict = "met" if median <= GOAL_SECONDS else "MISSED"
    say(f"  {label:<76} best {best:7.2f} s  median {median:7.2f} s  ({len(totals)} runs)  "
        f"goal <= {GOAL_SECONDS:g} s: {verdict}")


def bench(args) -> None:
    from django.conf import settings

    from leaderboard import services
    from leaderboard.selectors import LeaderboardSettings

    config = LeaderboardSettings.load()
    interval = services._style_interval()
    say(f"\nrefresh settings: bootstrap_rounds={config.bootstrap_rounds}, style_control={config.style_control}, "
        f"style_bootstrap_rounds={config.style_bootstrap_rounds}, style refresh every {interval:g} s in its own task"
        f"{' (0: inline)' if not interval else ''}, rater_daily_cap={config.rater_daily_cap}, "
        f"deduplicate_prompts={config.deduplicate_prompts}, min_category_votes={config.min_category_votes}, "
        f"speed window {getattr(settings, 'LEADERBOARD_SPEED_WINDOW_DAYS', 30)} days")
    overrides = {"seed": 1}
    if args.quick:
        overrides.update(bootstrap_rounds=50, style_bootstrap_rounds=5)
    # No broker here: the style task the refresh asks for is run below by hand, and timed on its own.
    scheduled = []
    services.schedule_refresh = lambda **kwargs: scheduled.append(kwargs) or True
    parts = instrument()
    summary: list[tuple[str, list[float]]] = []

    def run(label: str, *, force: bool, repeat: int = 1, before=None, **options) -> None:
        totals = []
        # Repeated up to ``repeat`` times, but a variant that takes minutes is not run again and again.
        while len(totals) < repeat and sum(totals) < REPEAT_BUDGET_SECONDS:
            if before:
                before()
            total, seconds, per_category, report = refresh_once(parts, force=force, **overrides, **options)
            totals.append(total)
            if len(totals) == 1:
                show_parts(f"\n{label}", total, seconds, per_category, report)
        summary.append((label, totals))

    style_task = {"style_control": True, "style_only": True}
    # Cold: the first refresh in this process and of this database (no snapshot, no tallies yet).
    run("cold refresh, defaults (plain snapshots; style control left to its task)", force=False)
    if config.style_control and interval:
        run("cold style-control refresh (its own task)", force=False, **style_task)
    new_votes = args.new_votes
    run(f"refresh after {new_votes:,} new votes, defaults", force=False, repeat=args.repeat,
        before=lambda: add_votes(new_votes))
    run("refresh after 10 battles were flagged for an identity leak, defaults", force=False,
        before=lambda: flag_identity_leak(10))
    run("refresh with nothing new, defaults", force=False, repeat=args.repeat)
    if config.style_control and interval:
        run(f"style-control refresh after {new_votes:,} new votes (its own task)", force=False,
            before=lambda: add_votes(new_votes), **style_task)
        run("style-control refresh with nothing new (its own task)", force=False, repeat=args.repeat, **style_task)
    run("warm, every category re-rated (force=True), plain", force=True)
    if args.rating_processes > 1:
        from leaderboard import rating_pool, services

        # The same refreshes with the categories rated by a pool of processes (the ratings worker's
        # LEADERBOARD_RATING_PROCESSES); the engine's parts then run in the children, unseen here.
        settings.LEADERBOARD_RATING_PROCESSES = args.rating_processes
        pool = f"rating pool of {args.rating_processes} processes"
        try:
            with parts.unwrapped(services, "rate"):
                rating_pool.warm_up()  # start the children before timing
                run(f"refresh after {new_votes:,} new votes, {pool}", force=False, repeat=args.repeat,
                    before=lambda: add_votes(new_votes))
                run(f"warm, every category re-rated (force=True), plain, {pool}", force=True)
        finally:
            settings.LEADERBOARD_RATING_PROCESSES = 1
            rating_pool.shutdown()
    run("warm, overall only, plain only (force=True)", force=True, repeat=args.repeat, style_control=False,
        categories=["overall"])
    if args.all_variants and config.style_control:
        run("warm, overall only, plain + style control inline (force=True)", force=True, style_control=True,
            categories=["overall"])

    votes_text = f"{args.votes:,} votes / {args.models} models" + (" (--quick: not the goal case)" if args.quick else "")
    say(f"\nsummary ({votes_text}, {overrides.get('bootstrap_rounds', config.bootstrap_rounds)} bootstrap rounds"
        + (f", {overrides.get('style_bootstrap_rounds', config.style_bootstrap_rounds)} style rounds"
           if config.style_control else "") + "):")
    for label, totals in summary:
        summarise(label, totals)
    say("  the goal figure is the refresh with defaults (the plain snapshots the votes ask for); the style-control "
        "refresh runs in its own task" if interval else "  style control runs inline with every refresh")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=None, help="votes to load (2,000,000; 20,000 with --quick)")
    parser.add_argument("--models", type=int, default=None, help="contenders (200; 20 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="warm runs of each variant (3; 1 with --quick)")
    parser.add_argument("--all-variants", action="store_true",
                        help="also every category plain only, and overall with style control")
    parser.add_argument("--new-votes", type=int, default=1000, help="votes added before the incremental runs (1000)")
    parser.add_argument("--rating-processes", type=int, default=2,
                        help="also refresh with the categories rated by this many processes (2; 1: not)")
    parser.add_argument("--quick", action="store_true",
                        help="small data, 50 bootstrap rounds and 5 style rounds: a smoke run")
    args = parser.parse_args()
    args.votes = args.votes or (20_000 if args.quick else 2_000_000)
    args.models = args.models or (20 if args.quick else 200)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.models < 2 or args.votes < 1:
        parser.error("need at least 2 models and 1 vote")

    workdir = Path(tempfile.mkdtemp(prefix="arena-bench-refresh-"))
    os.chmod(workdir, 0o755)
    postgres = Postgres(workdir / "pg")
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so that the cluster is stopped on the way out.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    try:
        database_url = postgres.start()
        if not database_url:
            say("PostgreSQL is not available: nothing to measure")
            return 2
        os.environ["DATABASE_URL"] = database_url
        os.environ.pop("REDIS_URL", None)
        os.environ.setdefault("SECRET_KEY", "bench-only-secret")
        os.environ["DJANGO_SETTINGS_MODULE"] = "arena.settings"
        import django
        from django.core.management import call_command

        django.setup()
        logging.getLogger("leaderboard").setLevel(logging.WARNING)  # one INFO line per refresh otherwise
        call_command("migrate", verbosity=0)
        say(f"loading {args.votes:,} votes over {args.models} contenders (not timed as part of the refresh)")
        started = time.perf_counter()
        load(votes=args.votes, models=args.models)
        say(f"loaded in {time.perf_counter() - started:.1f} s")
        bench(args)
        return 0
    except Exception:
        # The server log says why, when the cluster itself went away under the refresh.
        log_file = workdir / "pg" / "postgres.log"
        if log_file.exists():
            say("last lines of the PostgreSQL log:\n" + "".join(log_file.read_text().splitlines(True)[-15:]))
        raise
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
