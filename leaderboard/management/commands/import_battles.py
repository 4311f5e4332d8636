"""Import battles from a file so that they count on the leaderboard.

    python manage.py import_battles clean_battle.json
    python manage.py import_battles votes.csv --format csv

Accepts a FastChat ``clean_battle`` JSON list, JSON Lines or CSV (columns model_a, model_b, winner;
optional tstamp, anony, judge, language, turn, question_id, conversation_a/b). All rows are
checked before anything is written: with a bad row nothing is imported and every bad row found
(up to --max-errors) is listed with its line number. Importing the same file again adds nothing.
Imported models are matched to contenders by display name.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from leaderboard.battle_files import FORMATS, BattleFileError
from leaderboard.services import BattleImportError, battles_import


class Command(BaseCommand):
    help = "Import battles (FastChat JSON list, JSON Lines, CSV): all rows or none, idempotent."

    def add_arguments(self, parser):
        parser.add_argument("path", metavar="IN", help="battle file (gzip-compressed is fine)")
        parser.add_argument("--format", default="auto", choices=FORMATS, help="file format (default: auto)")
        parser.add_argument("--max-errors", type=int, default=20, metavar="N",
                            help="stop checking after this many bad rows (default 20)")
        parser.add_argument("--quiet-progress", action="store_true", help="no progress lines")

    def handle(self, *args, **options):
        progress = None if options["quiet_progress"] else self._progress
        try:
            report = battles_import(path=options["path"], format=options["format"], progress=progress,
                                    max_errors=max(options["max_errors"], 1))
        except BattleImportError as error:
            for bad in error.errors:
                self.stderr.write(str(bad))
            more = " (stopped counting)" if error.truncated else ""
            raise CommandError(f"{len(error.errors)} bad row(s){more}; nothing was imported") from error
        except BattleFileError as error:
            raise CommandError(f"{error}; nothing was imported") from error
        except OSError as error:
            raise CommandError(f"{options['path']}: {error.strerror or error}") from error
        self.stdout.write(
            f"{report.rows:,} battles read: {report.added:,} imported, {report.already_imported:,} already imported, "
            f"{report.arena_battles:,} are this arena's own battles (skipped); {report.seconds:.1f} s"
        )
        if report.added:
            self.stdout.write(f"online Elo replayed from {report.elo_replayed:,} votes; "
                              "run refresh_leaderboard (or wait for the periodic refresh) to update the snapshots")

    def _progress(self, stage: str, rows: int) -> None:
        self.stderr.write(f"{stage} {rows:,} rows")
        self.stderr.flush()
