"""Import lm-evaluation-harness results files so that their scores show on the leaderboard.

    python manage.py import_harness results_2026-11-28T10-26-00.415394.json
    python manage.py import_harness out/*/results_*.json --model "Llama 3.1 8B"
    python manage.py import_harness results.json --dry-run --json

Reads 0.3.x and 0.4.x results files. Each file is attached to a contender: the one given with
--model (display name or id), else the one whose display name, backend model id or alias is the
model the file names. All files are imported in one transaction: if one is malformed, from an
unknown harness version or for an unknown model, none is. A file imported before (same sha256)
is reported and left as it is. A dry run shows the rows even of a file that matches no contender,
and then exits with status 1, as the real import would fail.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from leaderboard.harness.parser import rows_to_json
from leaderboard.harness.services import HarnessImportError, harness_import_many, iter_reports_rows


class Command(BaseCommand):
    help = "Import lm-evaluation-harness results files (0.3.x/0.4.x): all or none, idempotent by file hash."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="results_*.json file(s)")
        parser.add_argument("--model", metavar="CONTENDER", default=None,
                            help="contender (display name or id) for every file, instead of matching the "
                                 "model name in the file")
        parser.add_argument("--dry-run", action="store_true", help="check and show, write nothing")
        parser.add_argument("--json", action="store_true",
                            help="print JSON: with --dry-run the normalised rows as a list, else one report "
                                 "per file")

    def handle(self, *args, **options):
        try:
            reports = harness_import_many(sources=options["paths"], contender=options["model"],
                                          dry_run=options["dry_run"])
        except HarnessImportError as error:
            raise CommandError(f"{error}; nothing was imported") from None
        for report in reports:
            for warning in report.warnings:
                self.stderr.write(f"warning: {report.file_name}: {warning}")
        if options["json"]:
            if options["dry_run"]:
                self.stdout.write(rows_to_json(iter_reports_rows(reports)))
            else:
                self.stdout.write(json.dumps([report.to_dict() for report in reports], indent=2,
                                             ensure_ascii=False))
        else:
            for report in reports:
                self.stdout.write(report.summary())
        unmatched = [report.file_name for report in reports if report.dry_run and report.contender_id is None]
        if unmatched:
            # The rows are shown, but a script checking the dry run must see that the import would fail.
            raise CommandError(f"a real import would fail: no contender for {', '.join(unmatched)} "
                               "(register it, add an alias, or pass --model)")
