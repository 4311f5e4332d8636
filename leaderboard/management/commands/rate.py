"""Rate models from a battle file: Bradley-Terry ratings with bootstrap intervals, and online Elo.

Reads the file once (streaming for CSV and JSON Lines) and never touches the database.

    python manage.py rate --battles clean_battle.json --bootstrap 1000 --seed 1
    python manage.py rate --battles votes.csv --anchor gpt-4=1200 --min-votes 300 --json

``--json`` prints one object ``{"battles", "params", "models"}``; models are sorted by rating, highest
first, each with model, rating, ci_lower, ci_upper, rank_ub, votes, win_rate, elo, provisional.
Solver and bootstrap diagnostics are in ``params["solver"]``.
"""
from __future__ import annotations

import json
import math

from django.core.management.base import BaseCommand, CommandError

from leaderboard.battle_files import FORMATS, BattleFileError, read_battles
from leaderboard.engine import ConvergenceError, DegenerateDataError, RatingResult, rate
from leaderboard.engine.bradley_terry import DEGENERATE_OPTIONS
from leaderboard.engine.outcomes import BOTHBAD_OPTIONS, TIE_OPTIONS


def parse_anchor(value: str) -> tuple[str, float]:
    model, sep, rating = value.rpartition("=")
    try:
        if not sep or not model:
            raise ValueError
        return model, float(rating)
    except ValueError:
        raise CommandError(f"--anchor must look like MODEL=RATING (e.g. gpt-4=1200); got {value!r}") from None


class Command(BaseCommand):
    help = "Rate models from a battle file (FastChat clean_battle JSON, JSON Lines or CSV). Needs no database."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--battles", required=True, metavar="PATH", help="battle file")
        parser.add_argument("--format", default="auto", choices=FORMATS, help="file format (default: auto)")
        parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                            help="bootstrap rounds for confidence intervals; 0 for none (default 1000)")
        parser.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: drawn and reported)")
        parser.add_argument("--anchor", type=parse_anchor, default=None, metavar="MODEL=RATING",
                            help="shift ratings so that MODEL has RATING (default: mean 1000)")
        parser.add_argument("--ties", default="half", choices=TIE_OPTIONS,
                            help="half: a tie is half a win for each side; drop: ignore all ties")
        parser.add_argument("--bothbad", default="tie", choices=BOTHBAD_OPTIONS,
                            help="tie: 'tie (bothbad)' counts as a tie; drop: ignore it")
        parser.add_argument("--min-votes", type=int, default=0, metavar="N",
                            help="models with fewer counted votes are marked provisional")
        parser.add_argument("--degenerate", default="regularise", choices=DEGENERATE_OPTIONS,
                            help="when some rating would be infinite (a model without wins, unconnected "
                                 "groups): apply a weak prior and report it, or fail")
        parser.add_argument("--anony-only", action="store_true", help="keep only votes with anony=true")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    def handle(self, *args, **options):
        if options["bootstrap"] < 0:
            raise CommandError("--bootstrap must be >= 0")
        if options["min_votes"] < 0:
            raise CommandError("--min-votes must be >= 0")
        try:
            battles = read_battles(options["battles"], options["format"], anony_only=options["anony_only"])
            result = rate(
                battles, ties=options["ties"], bothbad=options["bothbad"], bootstrap_rounds=options["bootstrap"],
                seed=options["seed"], anchor=options["anchor"], min_votes=options["min_votes"],
                degenerate=options["degenerate"],
            )
        except (BattleFileError, DegenerateDataError, ConvergenceError) as error:
            raise CommandError(str(error)) from error
        except ValueError as error:
            raise CommandError(f"{options['battles']}: {error}") from error
        except OSError as error:
            raise CommandError(f"{options['battles']}: {error.strerror or error}") from error
        if options["json"]:
            self.stdout.write(json.dumps(result.to_json_dict(), allow_nan=False))
        else:
            self.stdout.write(format_table(result))


def _fmt(value: float | None, pattern: str, empty: str = "-") -> str:
    return empty if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def format_table(result: RatingResult) -> str:
    params = result.params
    lines = [
        f"{result.battles:,} battles counted of {result.rows:,} votes, {len(result.models)} models "
        f"(ties: {params['ties']}, bothbad: {params['bothbad']})",
    ]
    solver = result.solver
    lines.append(
        f"Bradley-Terry: Newton, {solver['iterations']} steps, max |gradient| {solver['max_gradient']:.2e} "
        f"(threshold {solver['gradient_threshold']:.2e})"
        + ("" if params["anchor"] is None else f"; anchored {params['anchor'][0]} = {params['anchor'][1]:g}")
    )
    if solver["regularisation"]:
        lines.append(f"WARNING: weak prior applied: {solver['regularisation']['reason']}")
    if result.bootstrap:
        boot = result.bootstrap
        lines.append(f"{params['confidence']:.0%} intervals from {boot['rounds']} bootstrap rounds (seed {boot['seed']})"
                     + (f", {boot['degenerate_rounds']} needed the weak prior" if boot["degenerate_rounds"] else ""))
    width = max([5] + [len(row.model) + 2 for row in result.models])
    header = f"{'rank':>4}  {'model':<{width}} {'rating':>8} {'CI':>15} {'votes':>8} {'win rate':>9} {'elo':>8}"
    lines += ["", header, "-" * len(header)]
    for row in result.models:
        ci = "-"
        if row.ci_lower is not None:
            ci = f"+{row.ci_upper - row.rating:.1f}/-{row.rating - row.ci_lower:.1f}"
        name = row.model + (" *" if row.provisional else "")
        lines.append(
            f"{row.rank_ub:>4}  {name:<{width}} {row.rating:>8.1f} {ci:>15} {row.votes:>8,} "
            f"{_fmt(row.win_rate, '{:.1%}'):>9} {_fmt(row.elo, '{:.1f}'):>8}"
        )
    if any(row.provisional for row in result.models):
        lines.append(f"* provisional: fewer than {max(params['min_votes'], 1)} counted votes")
    lines.append("rank = 1 + models whose lower bound is above this model's upper bound")
    return "\n".join(lines)
