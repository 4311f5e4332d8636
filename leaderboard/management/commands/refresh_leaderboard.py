"""Rate the votes in the database and write leaderboard snapshots now.

    python manage.py refresh_leaderboard
    python manage.py refresh_leaderboard --bootstrap 200 --category overall --category coding
    python manage.py refresh_leaderboard --rebuild-elo --force
    python manage.py refresh_leaderboard --rebuild-tallies
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import F

from leaderboard.models import InputVersion, TallyState
from leaderboard.selectors import LeaderboardSettings
from leaderboard.services import elo_rebuild, leaderboard_refresh


class Command(BaseCommand):
    help = "Aggregate the votes, fit ratings with bootstrap intervals and write one snapshot per category."

    def add_arguments(self, parser):
        parser.add_argument("--bootstrap", type=int, default=None, metavar="N",
                            help="bootstrap rounds (default: LEADERBOARD_BOOTSTRAP_ROUNDS, 1000)")
        parser.add_argument("--style-bootstrap", type=int, default=None, metavar="N",
                            help="bootstrap rounds of the style-control fit (default: LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS)")
        parser.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: drawn and stored)")
        parser.add_argument("--category", action="append", default=None, metavar="C",
                            help="overall, multi-turn, long-prompts, coding or lang-<code>; repeatable "
                                 "(default: every category with enough votes)")
        parser.add_argument("--no-style", action="store_true",
                            help="skip the style-control variant (rated here otherwise, not left to its own task)")
        parser.add_argument("--force", action="store_true", help="write snapshots even where nothing changed")
        parser.add_argument("--rebuild-elo", action="store_true", help="replay online Elo from all votes first")
        parser.add_argument("--rebuild-tallies", action="store_true",
                            help="count every vote again instead of the changes the triggers queued (after "
                                 "loading rows with triggers off, e.g. a restore with session_replication_role)")

    def handle(self, *args, **options):
        for name in ("bootstrap", "style_bootstrap"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must be >= 0")
        if options["rebuild_tallies"]:
            TallyState.objects.update_or_create(pk=1, defaults={"stale": True})
            InputVersion.objects.filter(pk=1).update(version=F("version") + 1)
        if options["rebuild_elo"]:
            replayed = elo_rebuild()
            self.stdout.write(f"online Elo replayed from {replayed:,} votes")
        try:
            report = leaderboard_refresh(
                categories=options["category"], bootstrap_rounds=options["bootstrap"],
                style_bootstrap_rounds=options["style_bootstrap"], seed=options["seed"],
                style_control=not options["no_style"] and LeaderboardSettings.load().style_control, force=options["force"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        if report.busy:
            raise CommandError("another refresh is running; try again when it has finished")
        for snapshot in report.written:
            variant = " (style control)" if snapshot.style_control else ""
            self.stdout.write(f"snapshot {snapshot.pk}: {snapshot.category}{variant}, {snapshot.battles:,} battles, "
                              f"{snapshot.rows.count()} models, {snapshot.seconds:.2f} s")
        for name in report.unchanged:
            self.stdout.write(f"unchanged: {name}")
        for name, error in report.failed:
            self.stderr.write(f"FAILED: {name}: {error}")
        if not report.written and not report.unchanged and not report.failed:
            self.stdout.write("no votes to rate")
        self.stdout.write(f"done in {report.seconds:.2f} s")
        if report.failed:
            raise CommandError(f"{len(report.failed)} categor{'y' if len(report.failed) == 1 else 'ies'} failed")
