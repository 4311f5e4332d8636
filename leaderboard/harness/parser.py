"""Reading lm-evaluation-harness results files (0.3.x and 0.4.x) into normalised rows.

A results file holds one evaluation run: ``results[task]`` maps metric keys to scores. In 0.4.x a
metric key is ``"metric,filter"`` and its standard error is ``"metric_stderr,filter"``; in 0.3.x
keys are bare (``acc``, ``acc_stderr``) and the filter is taken to be ``none``. Every accepted
metric becomes one ``HarnessRow``; everything the importer and the leaderboard need to judge a
score (n-shot, ``--limit``, versions, date, file hash) travels on the row.

The input may come from an upload, so it is treated as hostile: a size cap, a nesting-depth cap,
duplicate keys, non-finite numbers, wrong types and unknown harness versions are refused with a
``HarnessFileError`` that names the key path and what was expected there. Pure Python: no Django.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
MAX_NAME_LENGTH = 255
MAX_MODEL_NAME_LENGTH = 512

# The harness takes the model name from the first of these model_args keys that is present
# (peft and delta come with pretrained, so they must win).
MODEL_NAME_KEYS = ("peft", "delta", "pretrained", "model", "path", "engine")

# Top-level keys that only 0.4.x writes; their presence settles the era when lm_eval_version is absent.
_V04_MARKERS = (
    "configs", "n-shot", "groups", "group_subtasks", "higher_is_better", "n-samples", "date",
    "model_name", "task_hashes", "git_hash",
)
_STDERR_SUFFIX = "_stderr"
_NOT_AVAILABLE = "N/A"
# lm_eval writes results_<ISO time with ':' replaced by '-'>.json (or <stem>_<time>.json).
_FILE_TIME = re.compile(r"_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d{1,6})?)\.json$")
_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?\S*\s*$")
# Unix times outside this window are not dates a harness run could have (1970 .. ~2242).
_MAX_UNIX_TIME = 2.0 ** 33


class HarnessFileError(ValueError):
    """A results file that cannot be accepted: where it went wrong and what was expected there."""

    def __init__(self, message: str, *, key_path: str | None = None, source: str | None = None):
        self.message = message
        self.key_path = key_path
        self.source = source
        where = ", ".join(part for part in (source, f"at {key_path}" if key_path else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class HarnessRow:
    """One metric of one task (or group) from one results file."""

    model_name: str  # "" when the file does not name the model (see HarnessRun.warnings)
    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None  # None when the harness wrote "N/A" or nothing
    n_shot: int | None
    limit: float | None  # config.limit: a count, or a fraction below 1.0
    harness_version: str  # "0.4.13", or "0.4.x" / "0.3.x" when the file does not say
    source_sha256: str
    source_name: str = ""
    is_group: bool = False
    higher_is_better: bool | None = None
    task_version: str | None = None
    samples_original: int | None = None
    samples_effective: int | None = None
    evaluated_at: dt.datetime | None = None  # timezone-aware UTC

    @property
    def key(self) -> str:
        return f"{self.metric},{self.filter}"

    @property
    def used_limit(self) -> bool:
        """The run scored only part of the task, so the number is not comparable with full runs."""
        if self.limit is not None:
            return True
        return (self.samples_original is not None and self.samples_effective is not None
                and self.samples_effective < self.samples_original)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "task": self.task, "metric": self.metric, "filter": self.filter,
            "value": self.value, "stderr": self.stderr, "n_shot": self.n_shot, "limit": self.limit,
            "used_limit": self.used_limit, "harness_version": self.harness_version,
            "source_sha256": self.source_sha256, "source_name": self.source_name, "is_group": self.is_group,
            "higher_is_better": self.higher_is_better, "task_version": self.task_version,
            "samples_original": self.samples_original, "samples_effective": self.samples_effective,
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
        }


@dataclass(frozen=True)
class HarnessRun:
    """A whole results file: its rows plus what describes the run as a whole."""

    rows: tuple[HarnessRow, ...]
    model_name: str
    model_source: str | None  # config.model: hf, vllm, local-completions, dummy, ...
    model_args: Mapping[str, Any] = field(hash=False)
    harness_version: str
    format: str  # "0.3" or "0.4"
    source_sha256: str
    source_name: str
    evaluated_at: dt.datetime | None
    date_source: str | None  # "date", "file name" or None
    limit: float | None
    warnings: tuple[str, ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.task for row in self.rows))

    def safe_model_args(self) -> dict[str, Any]:
        return redact_model_args(self.model_args)

    def to_dict(self, *, include_rows: bool = True) -> dict[str, Any]:
        """File-level facts (model_args with secrets masked) and, optionally, the rows."""
        data: dict[str, Any] = {
            "source_name": self.source_name, "source_sha256": self.source_sha256, "model_name": self.model_name,
            "model_source": self.model_source, "model_args": self.safe_model_args(),
            "harness_version": self.harness_version, "format": self.format,
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
            "date_source": self.date_source, "limit": self.limit, "warnings": list(self.warnings),
        }
        if include_rows:
            data["rows"] = [row.to_dict() for row in self.rows]
        return data


# ---------------------------------------------------------------------------------------------
# Entry points


def read_harness_file(source: str | Path | BinaryIO, *, max_bytes: int = DEFAULT_MAX_BYTES,
                      max_depth: int = DEFAULT_MAX_DEPTH, name: str | None = None) -> HarnessRun:
    """Read a results file from a path or a binary file object (e.g. an uploaded file)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise HarnessFileError(_too_big(size, max_bytes), source=label)
            with open(path, "rb") as handle:
                data = _read_capped(handle, max_bytes, label)
        except OSError as error:
            raise HarnessFileError(f"cannot read the file: {error.strerror or error}", source=label) from None
    else:
        label = name or str(getattr(source, "name", "") or "upload")
        data = _read_capped(source, max_bytes, label)
    return parse_harness_json(data, source_name=label, max_bytes=max_bytes, max_depth=max_depth)


def parse_harness_json(data: bytes | str, *, source_name: str = "", max_bytes: int = DEFAULT_MAX_BYTES,
                       max_depth: int = DEFAULT_MAX_DEPTH) -> HarnessRun:
    """Parse the text of a results file. The hash is over the exact bytes (UTF-8 for ``str``)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes or str, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise HarnessFileError(_too_big(len(data), max_bytes), source=source_name or None)
    sha256 = hashlib.sha256(data).hexdigest()
    document = _load_json(data, source_name, max_depth)
    return _Reader(document, sha256=sha256, source_name=source_name).read()


def rows_to_json(rows: Iterable[HarnessRow] | HarnessRun, *, indent: int | None = 2) -> str:
    """The rows as a JSON list of objects (what ``import_harness --dry-run --json`` prints)."""
    if isinstance(rows, HarnessRun):
        rows = rows.rows
    return json.dumps([row.to_dict() for row in rows], indent=indent, ensure_ascii=False, allow_nan=False)


def parse_model_args(value: Any, *, key_path: str = 'config["model_args"]') -> dict[str, Any]:
    """``config.model_args`` as a dict: the old CLI writes ``"k=v,k=v"``, the new one an object."""
    if value is None:
        return {}
    if isinstance(value, dict):
        for key in value:
            if not key:
                raise HarnessFileError("expected non-empty argument names", key_path=key_path)
        return dict(value)
    if not isinstance(value, str):
        raise HarnessFileError(f"expected a 'key=value,...' string or an object, found {_kind(value)}",
                               key_path=key_path)
    arguments: dict[str, Any] = {}
    # 0.4.10+ also accepts space-separated arguments, so split on both.
    for piece in re.split(r"[,\s]+", value.strip()):
        if not piece:
            continue
        key, equals, argument = piece.partition("=")
        if not equals or not key:
            raise HarnessFileError(f"expected 'key=value' pairs separated by commas, found {piece[:80]!r}",
                                   key_path=key_path)
        arguments[key] = argument
    return arguments


# API model types take credentials in model_args (auth_token=, header=...); never echo them.
_SECRET_ARG = re.compile(r"token(?!iz)|key|secret|password|passwd|auth|header|cookie|credential", re.IGNORECASE)
REDACTED = "***"


def redact_model_args(model_args: Mapping[str, Any]) -> dict[str, Any]:
    return {key: REDACTED if _SECRET_ARG.search(key) else value for key, value in model_args.items()}


def model_name_from_args(model_args: Mapping[str, Any]) -> str:
    for key in MODEL_NAME_KEYS:
        value = model_args.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def parse_harness_version(text: str) -> tuple[int, int, int | None]:
    match = _VERSION.match(text)
    if not match:
        raise ValueError(f"not a version number: {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch) if patch is not None else None


def file_name_time(name: str) -> dt.datetime | None:
    """The time lm_eval put in the file name (its local clock; there is no zone in the name)."""
    match = _FILE_TIME.search(name)
    if not match:
        return None
    stamp = match.group(1)
    day, _, clock = stamp.partition("T")
    try:
        return dt.datetime.fromisoformat(f"{day}T{clock.replace('-', ':')}")
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Loading with limits


def _too_big(size: int, max_bytes: int) -> str:
    return f"file is {size:,} bytes; expected at most {max_bytes:,} bytes"


def _read_capped(handle: BinaryIO, max_bytes: int, label: str) -> bytes:
    # Read one byte past the cap so that a file that grows or a stream without a size is still refused.
    data = handle.read(max_bytes + 1)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise HarnessFileError(f"file is larger than {max_bytes:,} bytes", source=label)
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _load_json(data: bytes, source_name: str, max_depth: int) -> Any:
    label = source_name or None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HarnessFileError(f"expected UTF-8 JSON text: {error.reason} at byte {error.start}", source=label) \
            from None
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as duplicate:
        raise HarnessFileError(f"duplicate key {duplicate.key!r} in one object; expected unique keys",
                               source=label) from None
    except RecursionError:
        raise HarnessFileError(f"nested too deeply; expected at most {max_depth} levels", source=label) from None
    except json.JSONDecodeError as error:
        hint = ""
        if error.msg == "Extra data":
            hint = " (several JSON documents: a samples_*.jsonl file? expected the results_*.json file)"
        raise HarnessFileError(f"expected one JSON object: {error.msg} at line {error.lineno} column {error.colno}"
                               f"{hint}", source=label) from None
    except ValueError as error:  # e.g. an integer literal with thousands of digits
        raise HarnessFileError(f"expected JSON numbers of ordinary size: {error}", source=label) from None
    _check_depth(document, max_depth, label)
    return document


def _check_depth(document: Any, max_depth: int, label: str | None) -> None:
    # Iterative so that the check itself cannot run out of stack.
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise HarnessFileError(f"nested too deeply; expected at most {max_depth} levels", source=label)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))


# ---------------------------------------------------------------------------------------------
# Validation helpers


def key_path(*parts: str) -> str:
    """``results["mini_mc"]["acc,none"]``: the first part bare, the rest quoted."""
    if not parts:
        return "(top level)"
    return parts[0] + "".join(f"[{json.dumps(_shorten(part), ensure_ascii=False)}]" for part in parts[1:])


def _shorten(text: str, limit: int = 80) -> str:
    # A hostile key can be megabytes long; an error message only needs to identify it.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_name(name: str, where: str, what: str, limit: int = MAX_NAME_LENGTH) -> str:
    if not name.strip():
        raise HarnessFileError(f"expected a non-empty {what}", key_path=where)
    if len(name) > limit:
        raise HarnessFileError(f"expected a {what} of at most {limit} characters, found {len(name)}",
                               key_path=where)
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise HarnessFileError(f"expected a {what} without control characters", key_path=where)
    return name


class _Reader:
    def __init__(self, document: Any, *, sha256: str, source_name: str):
        self.doc = document
        self.sha256 = sha256
        self.source_name = source_name
        self.warnings: list[str] = []

    def fail(self, message: str, *parts: str) -> HarnessFileError:
        return HarnessFileError(message, key_path=key_path(*parts) if parts else None,
                                source=self.source_name or None)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def mapping(self, value: Any, *parts: str, required: bool = False) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, found {_kind(value)}", *parts)
        return value

    # -- the document ------------------------------------------------------------------------

    def read(self) -> HarnessRun:
        try:
            return self._read()
        except HarnessFileError as error:
            if error.source is None and self.source_name:
                raise HarnessFileError(error.message, key_path=error.key_path, source=self.source_name) from None
            raise

    def _read(self) -> HarnessRun:
        doc = self.doc
        if not isinstance(doc, dict):
            raise self.fail(f"expected a JSON object at the top level, found {_kind(doc)}")
        if "config_general" in doc:
            raise self.fail("this is a lighteval results file (it has 'config_general'); expected an "
                            "lm-evaluation-harness results file with 'results' and 'config'")
        if "results" not in doc:
            raise self.fail("missing key 'results'; expected an lm-evaluation-harness results file "
                            "(top-level keys 'results', 'config', ...)")
        results = self.mapping(doc["results"], "results", required=True)
        if "config" not in doc:
            raise self.fail("missing key 'config'; expected the run's configuration (model, model_args, limit)")
        config = self.mapping(doc["config"], "config", required=True)

        version, era = self.version(doc, results)
        model_source = self.optional_string(config.get("model"), "config", "model")
        model_args = parse_model_args(config.get("model_args"))
        model_name = self.model_name(doc, model_args)
        limit = self.limit(config)
        evaluated_at, date_source = self.date(doc)

        if era == "0.3":
            rows = self.rows_v03(results, config, model_name, version, limit, evaluated_at)
        else:
            rows = self.rows_v04(doc, results, model_name, version, limit, evaluated_at)
        if not rows:
            expected = "'metric,filter' keys" if era == "0.4" else "numeric metric values"
            raise self.fail(f"no scores found; expected {expected} under results[task] for a {era}.x file",
                            "results")
        return HarnessRun(
            rows=tuple(rows), model_name=model_name, model_source=model_source, model_args=model_args,
            harness_version=version, format=era, source_sha256=self.sha256, source_name=self.source_name,
            evaluated_at=evaluated_at, date_source=date_source, limit=limit, warnings=tuple(self.warnings),
        )

    def version(self, doc: dict, results: dict) -> tuple[str, str]:
        declared = doc.get("lm_eval_version")
        if declared is not None:
            if not isinstance(declared, str):
                raise self.fail(f"expected a version string such as \"0.4.13\", found {_kind(declared)}",
                                "lm_eval_version")
            try:
                major, minor, _patch = parse_harness_version(declared)
            except ValueError:
                raise self.fail(f"expected a version such as \"0.4.13\", found {declared[:40]!r}",
                                "lm_eval_version") from None
            if major != 0 or minor not in (3, 4):
                newer = (major, minor) > (0, 4)
                raise self.fail(
                    f"lm-evaluation-harness {declared.strip()} is not supported: this reader knows the 0.3.x and "
                    f"0.4.x formats only" + ("; a newer release may have changed the format, so it is refused "
                                             "rather than guessed" if newer else ""),
                    "lm_eval_version")
            return declared.strip(), f"0.{minor}"
        has_comma_keys = any(isinstance(scores, dict) and any("," in key for key in scores)
                             for scores in results.values())
        if has_comma_keys or any(marker in doc for marker in _V04_MARKERS):
            return "0.4.x", "0.4"
        return "0.3.x", "0.3"

    def optional_string(self, value: Any, *parts: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"expected a string, found {_kind(value)}", *parts)
        return value

    def model_name(self, doc: dict, model_args: Mapping[str, Any]) -> str:
        name = model_name_from_args(model_args)
        written = doc.get("model_name")
        if written is not None and not isinstance(written, str):
            raise self.fail(f"expected a string, found {_kind(written)}", "model_name")
        if not name:
            if written:
                # 0.4.13 invents a random 8-character name when model_args names no model; it
                # would map to nothing (or, worse, to the wrong contender), so it is not used.
                self.warn(f"model_args names no model ({', '.join(MODEL_NAME_KEYS)}); the file's model_name "
                          f"{written[:40]!r} is a placeholder and was not used")
            else:
                self.warn(f"the file does not name the model (no {'/'.join(MODEL_NAME_KEYS)} in "
                          "config.model_args); choose the model explicitly")
            return ""
        return _check_name(name, key_path("config", "model_args"), "model name", MAX_MODEL_NAME_LENGTH)

    def limit(self, config: dict) -> float | None:
        value = config.get("limit")
        if value is None:
            return None
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise self.fail(f"expected null or a non-negative number, found {_kind(value)}", "config", "limit")
        return float(value)

    def date(self, doc: dict) -> tuple[dt.datetime | None, str | None]:
        value = doc.get("date")
        if value is not None:
            if not _is_number(value) or not math.isfinite(value) or not 0 < value < _MAX_UNIX_TIME:
                raise self.fail(f"expected a Unix time in seconds, found {_kind(value)}", "date")
            return dt.datetime.fromtimestamp(value, dt.timezone.utc), "date"
        stamp = file_name_time(Path(self.source_name).name) if self.source_name else None
        if stamp is not None:
            # The harness names files after its local clock; without a zone, read it as UTC.
            return stamp.replace(tzinfo=dt.timezone.utc), "file name"
        return None, None

    # -- scores ------------------------------------------------------------------------------

    def task_name(self, task: str) -> str:
        return _check_name(task, key_path("results", task), "task name")

    def value(self, value: Any, *parts: str) -> float:
        if not _is_number(value):
            raise self.fail(f"expected a number, found {_kind(value)}", *parts)
        if not math.isfinite(value):
            raise self.fail(f"expected a finite number, found {value!r}", *parts)
        return float(value)

    def stderr(self, value: Any, *parts: str) -> float | None:
        if value is None or value == _NOT_AVAILABLE:
            return None
        if not _is_number(value):
            raise self.fail(f"expected a number, \"N/A\" or null, found {_kind(value)}", *parts)
        if not math.isfinite(value):
            # Python's json writes NaN when a standard error could not be computed; treat as unknown.
            self.warn(f"{key_path(*parts)} is {value!r}; stored as unknown")
            return None
        if value < 0:
            raise self.fail(f"expected a non-negative standard error, found {value!r}", *parts)
        return float(value)

    def n_shot(self, value: Any, *parts: str) -> int | None:
        if value is None or value == _NOT_AVAILABLE:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(f"expected a non-negative whole number, found {_kind(value)}", *parts)
        return value

    def task_version(self, value: Any, *parts: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return _check_name(value, key_path(*parts), "version") if value.strip() else None
        if _is_number(value) and math.isfinite(value):
            return str(value)
        raise self.fail(f"expected a version number or string, found {_kind(value)}", *parts)

    def rows_v03(self, results: dict, config: dict, model_name: str, version: str, limit: float | None,
                 evaluated_at: dt.datetime | None) -> list[HarnessRow]:
        versions = self.mapping(self.doc.get("versions"), "versions")
        n_shot = self.n_shot(config.get("num_fewshot"), "config", "num_fewshot")
        rows = []
        for task, scores in results.items():
            self.task_name(task)
            scores = self.mapping(scores, "results", task, required=True)
            task_version = self.task_version(versions.get(task), "versions", task)
            metrics = {key: value for key, value in scores.items() if not key.endswith(_STDERR_SUFFIX)}
            for key in scores:
                if key.endswith(_STDERR_SUFFIX) and key[: -len(_STDERR_SUFFIX)] not in metrics:
                    self.warn(f"{key_path('results', task, key)} has no matching metric; ignored")
            for metric, value in metrics.items():
                _check_name(metric, key_path("results", task, metric), "metric name")
                rows.append(HarnessRow(
                    model_name=model_name, task=task, metric=metric, filter="none",
                    value=self.value(value, "results", task, metric),
                    stderr=self.stderr(scores.get(metric + _STDERR_SUFFIX), "results", task, metric + _STDERR_SUFFIX),
                    n_shot=n_shot, limit=limit, harness_version=version, source_sha256=self.sha256,
                    source_name=self.source_name, task_version=task_version, evaluated_at=evaluated_at,
                ))
        return rows

    def rows_v04(self, doc: dict, results: dict, model_name: str, version: str, limit: float | None,
                 evaluated_at: dt.datetime | None) -> list[HarnessRow]:
        groups = self.mapping(doc.get("groups"), "groups")
        group_subtasks = self.mapping(doc.get("group_subtasks"), "group_subtasks")
        for group, children in group_subtasks.items():
            if not isinstance(children, list) or not all(isinstance(child, str) for child in children):
                raise self.fail(f"expected a list of task names, found {_kind(children)}", "group_subtasks", group)
        configs = self.mapping(doc.get("configs"), "configs")
        for task, task_config in configs.items():
            self.mapping(task_config, "configs", task, required=True)
        versions = self.mapping(doc.get("versions"), "versions")
        n_shots = self.mapping(doc.get("n-shot"), "n-shot")
        directions = self.mapping(doc.get("higher_is_better"), "higher_is_better")
        n_samples = self.mapping(doc.get("n-samples"), "n-samples")
        group_names = set(groups) | set(group_subtasks)

        # Groups are listed in `results` as well; a group found only under `groups` is read from there.
        entries: list[tuple[str, str, Any]] = [("results", task, scores) for task, scores in results.items()]
        entries += [("groups", task, scores) for task, scores in groups.items() if task not in results]

        shots = {}
        for task in list(results) + list(groups) + list(configs):
            if task in n_shots:
                shots[task] = self.n_shot(n_shots[task], "n-shot", task)
            elif task in configs:
                shots[task] = self.n_shot(configs[task].get("num_fewshot"), "configs", task, "num_fewshot")
        rows = []
        for section, task, scores in entries:
            self.task_name(task)
            scores = self.mapping(scores, section, task, required=True)
            n_shot = shots.get(task)
            if n_shot is None and task in group_subtasks:
                n_shot = _common_group_shot(task, group_subtasks, shots)
            task_directions = self.mapping(directions.get(task), "higher_is_better", task)
            original, effective = self.samples(n_samples.get(task), task)
            task_version = self.task_version(versions.get(task), "versions", task)
            metric_keys = {}
            for key, value in scores.items():
                if "," not in key:
                    continue  # alias, name, sample_len, sample_count, " ": descriptive, not scores
                metric, _, filter_name = key.partition(",")
                if not metric or not filter_name:
                    raise self.fail("expected a 'metric,filter' key with both parts non-empty", section, task, key)
                metric_keys[(metric, filter_name)] = value
            for (metric, filter_name), value in metric_keys.items():
                if metric.endswith(_STDERR_SUFFIX):
                    if (metric[: -len(_STDERR_SUFFIX)], filter_name) not in metric_keys:
                        self.warn(f"{key_path(section, task, metric + ',' + filter_name)} has no matching metric; "
                                  "ignored")
                    continue
                key = f"{metric},{filter_name}"
                _check_name(metric, key_path(section, task, key), "metric name")
                _check_name(filter_name, key_path(section, task, key), "filter name")
                direction = task_directions.get(metric)
                if direction is not None and not isinstance(direction, bool):
                    raise self.fail(f"expected true, false or null, found {_kind(direction)}",
                                    "higher_is_better", task, metric)
                stderr_key = f"{metric}{_STDERR_SUFFIX},{filter_name}"
                rows.append(HarnessRow(
                    model_name=model_name, task=task, metric=metric, filter=filter_name,
                    value=self.value(value, section, task, key),
                    stderr=self.stderr(scores.get(stderr_key), section, task, stderr_key),
                    n_shot=n_shot, limit=limit, harness_version=version, source_sha256=self.sha256,
                    source_name=self.source_name, is_group=task in group_names, higher_is_better=direction,
                    task_version=task_version, samples_original=original, samples_effective=effective,
                    evaluated_at=evaluated_at,
                ))
        return rows

    def samples(self, value: Any, task: str) -> tuple[int | None, int | None]:
        counts = self.mapping(value, "n-samples", task)
        found = []
        for name in ("original", "effective"):
            count = counts.get(name)
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise self.fail(f"expected a non-negative whole number, found {_kind(count)}", "n-samples", task, name)
            found.append(count)
        return found[0], found[1]


def _common_group_shot(group: str, group_subtasks: Mapping[str, list[str]],
                       shots: Mapping[str, int | None]) -> int | None:
    """A group's n-shot when the file leaves it out (0.4.3 era): that of its leaf tasks, if they all agree."""
    found: set[int | None] = set()
    seen = {group}
    pending = list(group_subtasks.get(group, ()))
    while pending:
        task = pending.pop()
        if task in seen:
            continue  # a malformed file could list a group inside itself
        seen.add(task)
        if task in group_subtasks and shots.get(task) is None:
            pending.extend(group_subtasks[task])
        else:
            found.add(shots.get(task))
    return found.pop() if len(found) == 1 else None
