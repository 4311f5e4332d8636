"""Benchmark columns for the leaderboard: the Open LLM Leaderboard v1 and v2 presets and custom sets.

A ``ColumnSet`` is plain data: columns, each computed by the first of its ``Recipe``s whose parts
all have a score for the model. A recipe averages its parts (plain mean); with ``normalise`` each
part is first rescaled against its chance level c as ``100·(s − c)/(1 − c)``, floored at 0, the
way the v2 board did. ``evaluate`` turns one model's ``HarnessRow``s into column values with
standard errors and warning flags (n-shot differs from the preset's, the run used ``--limit``, a
fallback recipe was used, data missing).

Standard errors of a mean of parts assume the parts are independent (different questions), so
``se = sqrt(Σ se_i²) / k``; a part without a standard error leaves the column without one.
Pure Python: no Django.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from leaderboard.harness.parser import HarnessRow

# Warning flags on a column value. The UI shows a mark with the matching notes on hover.
FLAG_N_SHOT = "n_shot_mismatch"  # a part ran with another n-shot than the preset's
FLAG_N_SHOT_UNKNOWN = "n_shot_unknown"  # the file does not say how many shots a part used
FLAG_LIMIT = "limit"  # a part came from a run with --limit (a subset of the questions)
FLAG_FALLBACK = "fallback"  # computed by an alternative recipe that differs from the preset's definition
FLAG_MISSING = "missing"  # no recipe had all its parts
FLAG_INCOMPLETE = "incomplete"  # (average) some columns are missing
FLAGS = (FLAG_N_SHOT, FLAG_N_SHOT_UNKNOWN, FLAG_LIMIT, FLAG_FALLBACK, FLAG_MISSING, FLAG_INCOMPLETE)


class PresetError(ValueError):
    """A column set definition that cannot be used."""


@dataclass(frozen=True)
class Part:
    """One harness score feeding a column."""

    task: str
    metric: str
    filter: str = "none"
    chance: float = 0.0  # chance level for the v2 normalisation

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "filter": self.filter, "chance": self.chance}


@dataclass(frozen=True)
class Recipe:
    """A way to compute a column: the plain mean of its parts (each normalised if the column says so)."""

    parts: tuple[Part, ...]
    # Non-empty for a recipe that only approximates the preset's definition; shown with FLAG_FALLBACK.
    fallback_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"parts": [part.to_dict() for part in self.parts], "fallback_note": self.fallback_note}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    recipes: tuple[Recipe, ...]
    n_shot: int | None = None  # the preset's shot count; None: not checked
    normalise: bool = False  # v2 style 100·(s − c)/(1 − c) floored at 0 (needs scores in [0, 1])
    scale: float = 100.0  # without normalisation: value = scale · mean raw score
    higher_is_better: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "recipes": [recipe.to_dict() for recipe in self.recipes],
            "n_shot": self.n_shot, "normalise": self.normalise, "scale": self.scale,
            "higher_is_better": self.higher_is_better, "description": self.description,
        }


@dataclass(frozen=True)
class ColumnSet:
    key: str
    label: str
    columns: tuple[Column, ...]
    average: bool = True  # add an "Average" of all columns (only when none is missing)
    description: str = ""

    def column(self, key: str) -> Column:
        for column in self.columns:
            if column.key == key:
                return column
        raise KeyError(key)

    def tasks(self) -> set[str]:
        """Every task any recipe reads, e.g. to select rows from the database."""
        return {part.task for column in self.columns for recipe in column.recipes for part in recipe.parts}

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "columns": [column.to_dict() for column in self.columns],
                "average": self.average, "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSet:
        """Inverse of ``to_dict`` (for sets stored as JSON), validated."""
        try:
            columns = tuple(
                Column(
                    key=column["key"], label=column["label"],
                    recipes=tuple(
                        Recipe(parts=tuple(Part(task=part["task"], metric=part["metric"],
                                                filter=part.get("filter", "none"), chance=part.get("chance", 0.0))
                                           for part in recipe["parts"]),
                               fallback_note=recipe.get("fallback_note", ""))
                        for recipe in column["recipes"]),
                    n_shot=column.get("n_shot"), normalise=column.get("normalise", False),
                    scale=column.get("scale", 100.0), higher_is_better=column.get("higher_is_better", True),
                    description=column.get("description", ""),
                )
                for column in data["columns"])
            column_set = cls(key=data["key"], label=data["label"], columns=columns,
                             average=data.get("average", True), description=data.get("description", ""))
        except (KeyError, TypeError, AttributeError) as error:
            raise PresetError(f"not a column set definition: {error!r}") from None
        validate_column_set(column_set)
        return column_set


@dataclass(frozen=True)
class ColumnValue:
    key: str
    label: str
    value: float | None  # what the board shows (0-100 for the presets)
    stderr: float | None  # same units as value
    raw: float | None  # plain mean of the parts' raw scores (0-1), like the v2 board's "Raw" columns
    n_shot: int | None  # observed, when all parts agree
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # human-readable reasons for the flags
    sources: tuple[str, ...] = ()  # sha256 of the files the parts came from

    @property
    def warn(self) -> bool:
        return any(flag != FLAG_MISSING for flag in self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "value": self.value, "stderr": self.stderr, "raw": self.raw,
                "n_shot": self.n_shot, "flags": list(self.flags), "notes": list(self.notes),
                "sources": list(self.sources)}


@dataclass(frozen=True)
class PresetResult:
    column_set: str
    columns: tuple[ColumnValue, ...]
    average: ColumnValue | None  # None when the set has no average

    def values(self) -> dict[str, float | None]:
        """Column key -> value, with "average" when the set has one (input for correlation)."""
        values = {column.key: column.value for column in self.columns}
        if self.average is not None:
            values[self.average.key] = self.average.value
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"column_set": self.column_set, "columns": [column.to_dict() for column in self.columns],
                "average": self.average.to_dict() if self.average else None}


AVERAGE_KEY = "average"

# ---------------------------------------------------------------------------------------------
# The presets


def _single(task: str, metric: str, filter: str = "none", chance: float = 0.0, fallback_note: str = "") -> Recipe:
    return Recipe(parts=(Part(task, metric, filter, chance),), fallback_note=fallback_note)


MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)

# Number of answer options per multiple-choice subtask; chance = 1 / options.
BBH_CHOICES = {
    "boolean_expressions": 2, "causal_judgement": 2, "date_understanding": 6, "disambiguation_qa": 3,
    "formal_fallacies": 2, "geometric_shapes": 11, "hyperbaton": 2, "logical_deduction_five_objects": 5,
    "logical_deduction_seven_objects": 7, "logical_deduction_three_objects": 3, "movie_recommendation": 6,
    "navigate": 2, "object_counting": 19, "penguins_in_a_table": 5, "reasoning_about_colored_objects": 18,
    "ruin_names": 6, "salient_translation_error_detection": 6, "snarks": 2, "sports_understanding": 2,
    "temporal_sequences": 4, "tracking_shuffled_objects_five_objects": 5,
    "tracking_shuffled_objects_seven_objects": 7, "tracking_shuffled_objects_three_objects": 3,
    "web_of_lies": 2,
}
MUSR_CHOICES = {"murder_mysteries": 2, "object_placements": 5, "team_allocation": 3}
GPQA_CHANCE = 0.25
MMLU_PRO_CHANCE = 0.1

OPEN_LLM_V1 = ColumnSet(
    key="open_llm_v1", label="Open LLM Leaderboard v1",
    description="ARC, HellaSwag, MMLU, TruthfulQA, Winogrande, GSM8K as the archived v1 board showed them "
                "(accuracy in percent); the average is the plain mean of the six.",
    columns=(
        Column("arc", "ARC", n_shot=25, recipes=(_single("arc_challenge", "acc_norm"),),
               description="ARC-Challenge, 25-shot, acc_norm"),
        Column("hellaswag", "HellaSwag", n_shot=10, recipes=(_single("hellaswag", "acc_norm"),),
               description="HellaSwag, 10-shot, acc_norm"),
        Column("mmlu", "MMLU", n_shot=5, description="MMLU, 5-shot, acc: plain mean over the 57 subjects",
               recipes=(
                   Recipe(tuple(Part(f"mmlu_{subject}", "acc") for subject in MMLU_SUBJECTS)),
                   # 0.3.x names the subjects hendrycksTest-<subject>.
                   Recipe(tuple(Part(f"hendrycksTest-{subject}", "acc") for subject in MMLU_SUBJECTS)),
                   _single("mmlu", "acc", fallback_note="the mmlu group score is weighted by subject size, "
                                                        "not the plain mean over the 57 subjects"),
               )),
        Column("truthfulqa", "TruthfulQA", n_shot=0, description="TruthfulQA, 0-shot, mc2",
               recipes=(_single("truthfulqa_mc2", "acc"), _single("truthfulqa_mc", "mc2"))),
        Column("winogrande", "Winogrande", n_shot=5, recipes=(_single("winogrande", "acc"),),
               description="Winogrande, 5-shot, acc"),
        Column("gsm8k", "GSM8K", n_shot=5, description="GSM8K, 5-shot, exact match (strict)",
               recipes=(_single("gsm8k", "exact_match", "strict-match"), _single("gsm8k", "acc"))),
    ),
)

OPEN_LLM_V2 = ColumnSet(
    key="open_llm_v2", label="Open LLM Leaderboard v2",
    description="IFEval, BBH, MATH Lvl 5, GPQA, MuSR, MMLU-PRO normalised between chance (0) and a perfect "
                "score (100) as the v2 board did; the average is the plain mean of the six.",
    columns=(
        Column("ifeval", "IFEval", n_shot=0, normalise=True,
               description="mean of prompt-level and instruction-level strict accuracy, 0-shot",
               recipes=(Recipe((Part("leaderboard_ifeval", "prompt_level_strict_acc"),
                                Part("leaderboard_ifeval", "inst_level_strict_acc"))),)),
        Column("bbh", "BBH", n_shot=3, normalise=True,
               description="24 subtasks, 3-shot, acc_norm, each normalised by 1/choices, then averaged",
               recipes=(Recipe(tuple(Part(f"leaderboard_bbh_{name}", "acc_norm", chance=1 / choices)
                                     for name, choices in BBH_CHOICES.items())),)),
        Column("math_lvl5", "MATH Lvl 5", n_shot=4, normalise=True,
               description="MATH level-5 problems, 4-shot, exact match",
               recipes=(_single("leaderboard_math_hard", "exact_match"),)),
        Column("gpqa", "GPQA", n_shot=0, normalise=True, description="GPQA, 0-shot, acc_norm, chance 0.25",
               recipes=(_single("leaderboard_gpqa", "acc_norm", chance=GPQA_CHANCE),)),
        Column("musr", "MuSR", n_shot=0, normalise=True,
               description="3 subtasks, 0-shot, acc_norm, each normalised by 1/choices, then averaged",
               recipes=(Recipe(tuple(Part(f"leaderboard_musr_{name}", "acc_norm", chance=1 / choices)
                                     for name, choices in MUSR_CHOICES.items())),)),
        Column("mmlu_pro", "MMLU-PRO", n_shot=5, normalise=True, description="MMLU-PRO, 5-shot, acc, chance 0.1",
               recipes=(_single("leaderboard_mmlu_pro", "acc", chance=MMLU_PRO_CHANCE),)),
    ),
)

PRESETS: dict[str, ColumnSet] = {OPEN_LLM_V1.key: OPEN_LLM_V1, OPEN_LLM_V2.key: OPEN_LLM_V2}


def get_preset(key: str) -> ColumnSet:
    try:
        return PRESETS[key]
    except KeyError:
        raise PresetError(f"unknown preset {key!r}; expected one of {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Custom column sets


def custom_column_set(key: str, label: str, columns: Sequence[Mapping[str, Any]], *, average: bool = False,
                      description: str = "") -> ColumnSet:
    """A column set from simple specs, one column per benchmark, e.g.

    ``{"task": "internal_qa", "metric": "exact_match,strict-match", "label": "Internal QA"}``

    Optional per column: ``key`` (default: the task), ``filter`` (default ``none``, or taken from a
    ``metric,filter`` metric), ``n_shot`` (checked when given), ``scale`` (default 1: raw scores, since
    a custom metric need not be a proportion), ``higher_is_better`` (default true), ``description``.
    """
    built = []
    for number, spec in enumerate(columns, 1):
        if not isinstance(spec, Mapping):
            raise PresetError(f"column {number}: expected an object with task, metric and label")
        unknown = set(spec) - {"key", "task", "metric", "filter", "label", "n_shot", "scale", "higher_is_better",
                               "description"}
        if unknown:
            raise PresetError(f"column {number}: unknown field(s) {', '.join(sorted(unknown))}")
        for required in ("task", "metric", "label"):
            if not isinstance(spec.get(required), str) or not spec[required].strip():
                raise PresetError(f"column {number}: expected a non-empty string '{required}'")
        metric, comma, filter_name = spec["metric"].partition(",")
        if comma and "filter" in spec and spec["filter"] != filter_name:
            raise PresetError(f"column {number}: metric {spec['metric']!r} and filter {spec['filter']!r} disagree")
        filter_name = filter_name if comma else spec.get("filter", "none")
        built.append(Column(
            key=spec.get("key", spec["task"]), label=spec["label"].strip(),
            recipes=(Recipe((Part(spec["task"].strip(), metric.strip(), filter_name.strip()),)),),
            n_shot=spec.get("n_shot"), scale=spec.get("scale", 1.0),
            higher_is_better=spec.get("higher_is_better", True), description=spec.get("description", ""),
        ))
    column_set = ColumnSet(key=key, label=label, columns=tuple(built), average=average, description=description)
    validate_column_set(column_set)
    return column_set


def validate_column_set(column_set: ColumnSet) -> None:
    if not isinstance(column_set.key, str) or not column_set.key.strip():
        raise PresetError("a column set needs a non-empty key")
    if column_set.key in PRESETS and column_set is not PRESETS[column_set.key]:
        raise PresetError(f"the key {column_set.key!r} belongs to a built-in preset")
    if not column_set.columns:
        raise PresetError(f"column set {column_set.key!r} has no columns")
    seen = set()
    for column in column_set.columns:
        where = f"column {column.key!r}"
        if not isinstance(column.key, str) or not column.key.strip():
            raise PresetError("every column needs a non-empty key")
        if column.key in seen or column.key == AVERAGE_KEY:
            raise PresetError(f"{where}: the key is used twice or is reserved ('{AVERAGE_KEY}')")
        seen.add(column.key)
        if not isinstance(column.label, str) or not column.label.strip():
            raise PresetError(f"{where}: expected a non-empty label")
        if column.n_shot is not None and (not isinstance(column.n_shot, int) or isinstance(column.n_shot, bool)
                                          or column.n_shot < 0):
            raise PresetError(f"{where}: n_shot must be a non-negative whole number or null")
        if not _finite_number(column.scale) or column.scale == 0:
            raise PresetError(f"{where}: scale must be a finite non-zero number")
        if not isinstance(column.higher_is_better, bool) or not isinstance(column.normalise, bool):
            raise PresetError(f"{where}: higher_is_better and normalise must be true or false")
        if not column.recipes:
            raise PresetError(f"{where}: no recipe")
        for recipe in column.recipes:
            if not recipe.parts:
                raise PresetError(f"{where}: a recipe without parts")
            for part in recipe.parts:
                for name in ("task", "metric", "filter"):
                    text = getattr(part, name)
                    if not isinstance(text, str) or not text.strip() or (name != "filter" and "," in text):
                        raise PresetError(f"{where}: part {name} must be a non-empty name, found {text!r}")
                if not _finite_number(part.chance) or not 0 <= part.chance < 1:
                    raise PresetError(f"{where}: chance level must be in [0, 1), found {part.chance!r}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Computing columns


def normalise_score(score: float, chance: float) -> float:
    """The v2 board's normalisation: 0 at or below chance, 100 for a perfect score."""
    if not 0 <= chance < 1:
        raise ValueError(f"chance level must be in [0, 1), got {chance}")
    if score < chance:
        return 0.0
    return 100.0 * (score - chance) / (1.0 - chance)


def _preference(row: HarnessRow, n_shot: int | None) -> tuple:
    # Between several imports of the same score: a full run at the preset's n-shot first, then the newest.
    stamp = row.evaluated_at.timestamp() if row.evaluated_at else float("-inf")
    return (not row.used_limit, n_shot is None or row.n_shot == n_shot, stamp, row.source_sha256)


def _index(rows: Iterable[HarnessRow]) -> dict[tuple[str, str, str], list[HarnessRow]]:
    index: dict[tuple[str, str, str], list[HarnessRow]] = {}
    for row in rows:
        index.setdefault((row.task, row.metric, row.filter), []).append(row)
    return index


def evaluate(column_set: ColumnSet, rows: Iterable[HarnessRow]) -> PresetResult:
    """Column values for one model from its rows (from any number of files).

    When the same task/metric/filter was imported more than once, the score from a full run
    (no ``--limit``) at the column's n-shot wins, then the most recent one.
    """
    index = _index(rows)
    values = tuple(_evaluate_column(column, index) for column in column_set.columns)
    average = _average(values) if column_set.average else None
    return PresetResult(column_set=column_set.key, columns=values, average=average)


def _evaluate_column(column: Column, index: Mapping[tuple[str, str, str], list[HarnessRow]]) -> ColumnValue:
    for recipe in column.recipes:
        chosen = []
        for part in recipe.parts:
            candidates = index.get((part.task, part.metric, part.filter))
            if not candidates:
                break
            chosen.append(max(candidates, key=lambda row: _preference(row, column.n_shot)))
        else:
            return _combine(column, recipe, chosen)
    wanted = "; ".join(" + ".join(f"{part.task} {part.metric},{part.filter}" for part in recipe.parts[:3])
                       + (f" + {len(recipe.parts) - 3} more" if len(recipe.parts) > 3 else "")
                       for recipe in column.recipes)
    return ColumnValue(key=column.key, label=column.label, value=None, stderr=None, raw=None, n_shot=None,
                       flags=(FLAG_MISSING,), notes=(f"no results for {wanted}",))


def _combine(column: Column, recipe: Recipe, rows: list[HarnessRow]) -> ColumnValue:
    flags: list[str] = []
    notes: list[str] = []
    count = len(rows)
    scaled, scaled_errors = [], []
    for part, row in zip(recipe.parts, rows):
        if column.normalise:
            factor = 100.0 / (1.0 - part.chance)
            scaled.append(normalise_score(row.value, part.chance))
        else:
            factor = column.scale
            scaled.append(column.scale * row.value)
        # A floored part still carries the uncertainty of its raw score, rescaled.
        scaled_errors.append(None if row.stderr is None else abs(factor) * row.stderr)
    value = math.fsum(scaled) / count
    stderr = None
    if all(error is not None for error in scaled_errors):
        stderr = math.sqrt(math.fsum(error * error for error in scaled_errors)) / count
    raw = math.fsum(row.value for row in rows) / count

    shots = {row.n_shot for row in rows}
    observed = next(iter(shots)) if len(shots) == 1 else None
    if column.n_shot is not None:
        known = shots - {None}
        if known - {column.n_shot}:
            flags.append(FLAG_N_SHOT)
            notes.append(f"run with {', '.join(str(shot) for shot in sorted(known))}-shot; "
                         f"the preset uses {column.n_shot}-shot")
        if None in shots:
            flags.append(FLAG_N_SHOT_UNKNOWN)
            notes.append("the results file does not say how many shots were used")
    limited = [row for row in rows if row.used_limit]
    if limited:
        flags.append(FLAG_LIMIT)
        notes.append("scored on a subset of the questions (--limit)")
    if recipe.fallback_note:
        flags.append(FLAG_FALLBACK)
        notes.append(recipe.fallback_note)
    return ColumnValue(key=column.key, label=column.label, value=value, stderr=stderr, raw=raw, n_shot=observed,
                       flags=tuple(flags), notes=tuple(notes),
                       sources=tuple(dict.fromkeys(row.source_sha256 for row in rows)))


def _average(values: Sequence[ColumnValue]) -> ColumnValue:
    missing = [value.label for value in values if value.value is None]
    flags = sorted({flag for value in values for flag in value.flags if flag != FLAG_MISSING},
                   key=FLAGS.index)
    notes = [f"{value.label}: {note}" for value in values for note in value.notes if value.value is not None]
    if missing:
        return ColumnValue(key=AVERAGE_KEY, label="Average", value=None, stderr=None, raw=None, n_shot=None,
                           flags=tuple([FLAG_INCOMPLETE, *flags]),
                           notes=(f"missing: {', '.join(missing)}", *notes))
    count = len(values)
    errors = [value.stderr for value in values]
    stderr = None
    if all(error is not None for error in errors):
        stderr = math.sqrt(math.fsum(error * error for error in errors)) / count
    return ColumnValue(
        key=AVERAGE_KEY, label="Average", value=math.fsum(value.value for value in values) / count, stderr=stderr,
        raw=None, n_shot=None, flags=tuple(flags), notes=tuple(notes),
        sources=tuple(dict.fromkeys(source for value in values for source in value.sources)),
    )


def column_table(results: Mapping[str, PresetResult]) -> dict[str, dict[str, float | None]]:
    """``{model: PresetResult}`` -> ``{column key: {model: value}}``, the shape correlation takes."""
    table: dict[str, dict[str, float | None]] = {}
    for model, result in results.items():
        for key, value in result.values().items():
            table.setdefault(key, {})[model] = value
    return table
