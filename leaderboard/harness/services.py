"""Writes for lm-evaluation-harness results: importing results files, API tokens.

``harness_import`` reads one results file (parser.py does the checking), finds the contender it
belongs to and stores the file with its rows in one transaction. A file is identified by the sha256
of its bytes, so importing it again changes nothing and says so. Any error (a malformed file, an
unknown harness version, a model that matches no contender or several) raises ``HarnessImportError``
before anything is written.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any, Iterable, Sequence

from django.db import IntegrityError, transaction
from django.utils import timezone

from arena.models import ArenaModel
from leaderboard.harness.parser import HarnessFileError, HarnessRow, HarnessRun, parse_harness_json, read_harness_file
from leaderboard.models import ApiToken, HarnessFile, HarnessResult

Source = str | Path | bytes | bytearray | IO[bytes]


class HarnessImportError(ValueError):
    """A results file that was not imported, and why (one line)."""

    def __init__(self, message: str, *, source: str = ""):
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source and not message.startswith(source) else message)


@dataclass
class HarnessImportReport:
    """What importing one file did (or, in a dry run, would do)."""

    file_name: str
    sha256: str
    harness_version: str
    harness_model_name: str
    contender_id: int | None
    contender: str | None  # display name
    rows: tuple[HarnessRow, ...]
    created: bool  # a new HarnessFile was written
    already_imported: bool
    dry_run: bool
    file_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, *, include_rows: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file_name": self.file_name, "sha256": self.sha256, "harness_version": self.harness_version,
            "harness_model_name": self.harness_model_name, "contender_id": self.contender_id,
            "contender": self.contender, "rows": len(self.rows), "created": self.created,
            "already_imported": self.already_imported, "dry_run": self.dry_run, "file_id": self.file_id,
            "warnings": list(self.warnings),
        }
        if include_rows:
            data["results"] = [row.to_dict() for row in self.rows]
        return data

    def summary(self) -> str:
        target = f"contender {self.contender!r}" if self.contender else "no contender"
        if self.already_imported:
            return f"{self.file_name}: already imported (sha256 {self.sha256[:12]}) for {target}; nothing changed"
        if self.dry_run:
            return f"{self.file_name}: {len(self.rows)} result(s) would be imported for {target} (dry run)"
        return f"{self.file_name}: {len(self.rows)} result(s) imported for {target} (sha256 {self.sha256[:12]})"


# ---------------------------------------------------------------------------------------------
# Finding the contender


def contender_resolve(*, model_name: str, explicit: ArenaModel | str | int | None = None) -> ArenaModel:
    """The contender a results file belongs to.

    ``explicit`` (a contender, its id or its display name) wins. Otherwise the harness model name
    is looked up as a display name, then as a backend model id, then among aliases; exact matches
    first, then ignoring case. A name that matches several contenders at the same step is an error
    (the same backend model may be served with two decoding presets): choose one explicitly.
    """
    if explicit is not None:
        return _explicit_contender(explicit)
    if not model_name:
        raise HarnessImportError("the file does not name the model (no pretrained=/model= in config.model_args); "
                                 "choose the contender explicitly")
    contenders = list(ArenaModel.objects.only("id", "display_name", "backend_model_id", "aliases"))
    steps = (
        ("display name", lambda c: [c.display_name]),
        ("backend model id", lambda c: [c.backend_model_id]),
        ("alias", lambda c: [a for a in (c.aliases or []) if isinstance(a, str)]),
    )
    for fold in (False, True):
        wanted = model_name.casefold() if fold else model_name
        for what, names in steps:
            found = [c for c in contenders
                     if wanted in ((n.casefold() if fold else n) for n in names(c) if n)]
            if len(found) == 1:
                return ArenaModel.objects.get(pk=found[0].pk)
            if len(found) > 1:
                listed = ", ".join(repr(c.display_name) for c in found[:5])
                raise HarnessImportError(f"model {model_name!r} matches the {what} of several contenders "
                                         f"({listed}); choose one explicitly")
    raise HarnessImportError(f"no contender matches model {model_name!r} (by display name, backend model id or "
                             "alias); register it, add an alias, or choose the contender explicitly")


def _explicit_contender(explicit: ArenaModel | str | int) -> ArenaModel:
    if isinstance(explicit, ArenaModel):
        return explicit
    if isinstance(explicit, int) or (isinstance(explicit, str) and explicit.isdigit()):
        found = ArenaModel.objects.filter(pk=int(explicit)).first()
        if found is not None:
            return found
    if isinstance(explicit, str):
        found = ArenaModel.objects.filter(display_name=explicit).first()
        if found is not None:
            return found
    raise HarnessImportError(f"no contender named {str(explicit)!r}")


# ---------------------------------------------------------------------------------------------
# Importing


def _parse(source: Source, name: str | None) -> HarnessRun:
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return parse_harness_json(bytes(source), source_name=name or "upload")
        return read_harness_file(source, name=name)
    except HarnessFileError as error:
        raise HarnessImportError(str(error)) from None


def _display_name(run: HarnessRun, name: str | None) -> str:
    text = name or run.source_name or "upload"
    base = PurePath(text.replace("\\", "/")).name or text
    return base[:255]


def harness_import(*, path_or_bytes: Source, contender: ArenaModel | str | int | None = None,
                   dry_run: bool = False, user=None, name: str | None = None) -> HarnessImportReport:
    """Import one results file: all its rows or none.

    ``path_or_bytes``: a path, the file's bytes or a binary file object (an upload); ``name`` labels
    bytes and uploads. ``contender``: the contender, its id or display name, or None to find it
    from the file's model name. ``dry_run``: check everything, write nothing; a model that maps to no
    contender is then a warning on the report instead of an error.
    """
    run = _parse(path_or_bytes, name)
    label = _display_name(run, name)
    warnings = list(run.warnings)
    existing = HarnessFile.objects.select_related("contender").filter(sha256=run.source_sha256).first()
    if existing is not None:
        return _already(run, existing, label, warnings, contender=contender, dry_run=dry_run)

    try:
        target = contender_resolve(model_name=run.model_name, explicit=contender)
    except HarnessImportError as error:
        if not dry_run:
            raise HarnessImportError(error.message, source=label) from None
        warnings.append(f"{error.message} (a real import would fail)")
        target = None
    report = HarnessImportReport(
        file_name=label, sha256=run.source_sha256, harness_version=run.harness_version,
        harness_model_name=run.model_name, contender_id=target.pk if target else None,
        contender=target.display_name if target else None, rows=run.rows, created=False, already_imported=False,
        dry_run=dry_run, warnings=warnings,
    )
    if dry_run:
        return report
    try:
        with transaction.atomic():
            stored = _store(run, label, target, user, path_or_bytes)
    except IntegrityError:
        # The same file imported concurrently: the other import won, which is the same outcome.
        existing = HarnessFile.objects.select_related("contender").filter(sha256=run.source_sha256).first()
        if existing is None:
            raise
        return _already(run, existing, label, warnings, contender=contender, dry_run=dry_run)
    report.created = True
    report.file_id = stored.pk
    return report


def _already(run: HarnessRun, existing: HarnessFile, label: str, warnings: list[str], *,
             contender: ArenaModel | str | int | None, dry_run: bool) -> HarnessImportReport:
    if contender is not None:
        wanted = _explicit_contender(contender)
        if wanted.pk != existing.contender_id:
            raise HarnessImportError(
                f"this file (sha256 {run.source_sha256[:12]}) is already imported for contender "
                f"{existing.contender.display_name!r}, not {wanted.display_name!r}; delete that import first "
                "to attach it elsewhere", source=label)
    return HarnessImportReport(
        file_name=label, sha256=run.source_sha256, harness_version=run.harness_version,
        harness_model_name=run.model_name, contender_id=existing.contender_id,
        contender=existing.contender.display_name, rows=run.rows, created=False, already_imported=True,
        dry_run=dry_run, file_id=existing.pk, warnings=warnings,
    )


def _size(source: Source, run: HarnessRun) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (str, Path)):
        try:
            return Path(source).stat().st_size
        except OSError:
            return 0
    return int(getattr(source, "size", 0) or 0)


def _store(run: HarnessRun, label: str, contender: ArenaModel, user, source: Source) -> HarnessFile:
    stored = HarnessFile.objects.create(
        sha256=run.source_sha256, file_name=label, size_bytes=_size(source, run),
        harness_version=run.harness_version[:32], file_format=run.format,
        harness_model_name=run.model_name[:512], model_source=(run.model_source or "")[:100],
        model_args=_json_safe(run.safe_model_args()), contender=contender, evaluated_at=run.evaluated_at,
        limit=run.limit, warnings=list(run.warnings), imported_at=timezone.now(),
        imported_by=user if getattr(user, "is_authenticated", False) else None,
    )
    HarnessResult.objects.bulk_create([
        HarnessResult(
            file=stored, task=row.task, metric=row.metric, filter=row.filter, value=row.value, stderr=row.stderr,
            n_shot=row.n_shot, limit=row.limit, used_limit=row.used_limit, is_group=row.is_group,
            higher_is_better=row.higher_is_better, task_version=row.task_version,
            samples_original=row.samples_original, samples_effective=row.samples_effective,
        )
        for row in run.rows
    ])
    return stored


def _json_safe(value: Any) -> Any:
    # model_args from a 0.4.10+ file is an arbitrary JSON object: keep it, but only as JSON types.
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def harness_import_many(*, sources: Sequence[Source | tuple[Source, str]],
                        contender: ArenaModel | str | int | None = None, dry_run: bool = False,
                        user=None) -> list[HarnessImportReport]:
    """Import several files in one transaction: if any one fails, none is imported.

    Each source is a path, bytes or a file object, or a ``(source, name)`` pair.
    """
    reports = []
    with transaction.atomic():
        for item in sources:
            source, name = item if isinstance(item, tuple) else (item, None)
            reports.append(harness_import(path_or_bytes=source, contender=contender, dry_run=dry_run, user=user,
                                          name=name))
    return reports


# ---------------------------------------------------------------------------------------------
# API tokens

TOKEN_PREFIX = "lbt_"


def _token_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_token_create(*, user, name: str, token: ApiToken | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user`` (filling ``token`` when given, e.g. the admin's unsaved object).

    The key is returned once; only its hash is kept.
    """
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = token if token is not None else ApiToken()
    token.user, token.name = user, name
    token.key_hash, token.prefix = _token_hash(key), key[:12]
    token.save()
    return token, key


def api_token_user(*, key: str):
    """The active user a token belongs to, or None (unknown, revoked, or the user is inactive)."""
    if not key or len(key) > 200:
        return None
    token = (ApiToken.objects.select_related("user").filter(key_hash=_token_hash(key), revoked=False).first())
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def iter_reports_rows(reports: Iterable[HarnessImportReport]) -> list[HarnessRow]:
    return [row for report in reports for row in report.rows]
