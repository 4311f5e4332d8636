"""Write the arena's votes as a FastChat ``clean_battle`` JSON list.

    python manage.py export_battles clean_battle.json
    python manage.py export_battles - --conversations > battles.json

Rows: question_id, model_a, model_b, winner, judge (a keyed pseudonym of the rater, never the
username), turn, anony, language, tstamp, and with --conversations conversation_a/conversation_b.
Battles flagged for an identity leak or with a failed answer are left out.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from leaderboard.services import battles_export, export_to_path


class Command(BaseCommand):
    help = "Export votes as a FastChat clean_battle JSON list (readable by `rate` and `import_battles`)."

    def add_arguments(self, parser):
        parser.add_argument("out", metavar="OUT", help="output file, or - for standard output")
        parser.add_argument("--conversations", action="store_true", help="include prompts and answers")
        parser.add_argument("--arena-only", action="store_true", help="leave out battles imported from files")

    def handle(self, *args, **options):
        include_imported = not options["arena_only"]
        if options["out"] == "-":
            written = battles_export(out=self.stdout, conversations=options["conversations"],
                                     include_imported=include_imported)
            self.stderr.write(f"{written:,} battles exported")
            return
        try:
            written = export_to_path(path=options["out"], conversations=options["conversations"],
                                     include_imported=include_imported)
        except OSError as error:
            raise CommandError(f"{options['out']}: {error.strerror or error}") from error
        self.stdout.write(f"{written:,} battles written to {options['out']}")
