"""Open LLM Leaderboard presets and custom column sets: the numbers, the flags, the definitions."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from leaderboard.harness import (
    AVERAGE_KEY, BBH_CHOICES, FLAG_FALLBACK, FLAG_INCOMPLETE, FLAG_LIMIT, FLAG_MISSING, FLAG_N_SHOT,
    FLAG_N_SHOT_UNKNOWN, MMLU_SUBJECTS, MUSR_CHOICES, OPEN_LLM_V1, OPEN_LLM_V2, PRESETS, ColumnSet, HarnessRow,
    PresetError, column_table, custom_column_set, evaluate, get_preset, normalise_score, read_harness_file,
)

RESULTS_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "harness-results"


def reference_file(folder: str) -> Path:
    found = sorted((RESULTS_DIR / folder).glob("results*.json")) if (RESULTS_DIR / folder).is_dir() else []
    if len(found) != 1:
        pytest.fail(f"expected one results*.json in {RESULTS_DIR / folder} (see shared/reference/harness.md §10)",
                    pytrace=False)
    return found[0]


def row(task: str, metric: str, value: float, *, filter: str = "none", stderr: float | None = 0.01,
        n_shot: int | None = 0, limit: float | None = None, sha: str = "f" * 64, when: dt.datetime | None = None,
        samples: tuple[int, int] | None = None) -> HarnessRow:
    original, effective = samples or (None, None)
    return HarnessRow(model_name="acme/model", task=task, metric=metric, filter=filter, value=value, stderr=stderr,
                      n_shot=n_shot, limit=limit, harness_version="0.4.x", source_sha256=sha,
                      samples_original=original, samples_effective=effective, evaluated_at=when)


def column(result, key):
    return next(value for value in result.columns if value.key == key)


# ---------------------------------------------------------------------------------------------
# The normalisation


@pytest.mark.parametrize("score, chance, expected", [
    (0.60, 0.25, 46.666666666666664),  # the reference's GPQA example
    (0.40, 0.10, 33.333333333333336),  # the reference's MMLU-PRO example
    (0.20, 0.25, 0.0),  # below chance: floored
    (0.25, 0.25, 0.0),
    (1.00, 0.25, 100.0),
    (0.5, 0.5, 0.0),
    (0.75, 0.5, 50.0),  # 2 choices
    (0.3, 0.0, 30.0),  # chance 0: plain percent
    (1 / 19 + 0.5, 1 / 19, 100 * 0.5 / (18 / 19)),  # object_counting
])
def test_normalise_score(score, chance, expected):
    assert normalise_score(score, chance) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("chance", [-0.1, 1.0, 1.5])
def test_normalise_score_refuses_impossible_chance(chance):
    with pytest.raises(ValueError):
        normalise_score(0.5, chance)


def test_preset_data_matches_the_reference():
    assert len(MMLU_SUBJECTS) == 57 and len(set(MMLU_SUBJECTS)) == 57
    assert len(BBH_CHOICES) == 24
    # the examples the reference gives
    assert (BBH_CHOICES["sports_understanding"], BBH_CHOICES["date_understanding"], BBH_CHOICES["geometric_shapes"],
            BBH_CHOICES["reasoning_about_colored_objects"], BBH_CHOICES["object_counting"]) == (2, 6, 11, 18, 19)
    assert MUSR_CHOICES == {"murder_mysteries": 2, "object_placements": 5, "team_allocation": 3}
    assert [c.label for c in OPEN_LLM_V1.columns] == ["ARC", "HellaSwag", "MMLU", "TruthfulQA", "Winogrande", "GSM8K"]
    assert [c.n_shot for c in OPEN_LLM_V1.columns] == [25, 10, 5, 0, 5, 5]
    assert [c.label for c in OPEN_LLM_V2.columns] == ["IFEval", "BBH", "MATH Lvl 5", "GPQA", "MuSR", "MMLU-PRO"]
    assert [c.n_shot for c in OPEN_LLM_V2.columns] == [0, 3, 4, 0, 0, 5]
    assert OPEN_LLM_V2.column("gpqa").recipes[0].parts[0].chance == 0.25
    assert OPEN_LLM_V2.column("mmlu_pro").recipes[0].parts[0].chance == 0.1
    assert get_preset("open_llm_v2") is OPEN_LLM_V2
    with pytest.raises(PresetError, match="unknown preset 'v3'"):
        get_preset("v3")
    assert "leaderboard_bbh_navigate" in OPEN_LLM_V2.tasks()


# ---------------------------------------------------------------------------------------------
# Open LLM Leaderboard v2


def v2_rows(**overrides) -> list[HarnessRow]:
    bbh_scores = {name: 0.5 for name in BBH_CHOICES}
    bbh_scores.update(sports_understanding=0.75, object_counting=0.02, geometric_shapes=1.0)
    rows = [
        row("leaderboard_ifeval", "prompt_level_strict_acc", 0.6, stderr=0.02),
        row("leaderboard_ifeval", "inst_level_strict_acc", 0.7, stderr=None),  # "N/A" in real files
        row("leaderboard_math_hard", "exact_match", 0.12, n_shot=4, stderr=0.01),
        row("leaderboard_gpqa", "acc_norm", 0.60, stderr=0.015),
        row("leaderboard_mmlu_pro", "acc", 0.40, n_shot=5, stderr=0.005),
        row("leaderboard_musr_murder_mysteries", "acc_norm", 0.6, stderr=0.03),
        row("leaderboard_musr_object_placements", "acc_norm", 0.1, stderr=0.03),
        row("leaderboard_musr_team_allocation", "acc_norm", 0.5, stderr=0.03),
        *[row(f"leaderboard_bbh_{name}", "acc_norm", score, n_shot=3, stderr=0.02)
          for name, score in bbh_scores.items()],
    ]
    return rows


def expected_bbh() -> float:
    scores = {name: 0.5 for name in BBH_CHOICES}
    scores.update(sports_understanding=0.75, object_counting=0.02, geometric_shapes=1.0)
    return sum(normalise_score(scores[name], 1 / choices) for name, choices in BBH_CHOICES.items()) / 24


def test_v2_columns_with_known_numbers():
    result = evaluate(OPEN_LLM_V2, v2_rows())
    values = result.values()
    assert values["ifeval"] == pytest.approx(65.0)
    assert values["math_lvl5"] == pytest.approx(12.0)
    assert values["gpqa"] == pytest.approx(46.666666666666664)
    assert values["mmlu_pro"] == pytest.approx(33.333333333333336)
    musr = (normalise_score(0.6, 1 / 2) + normalise_score(0.1, 1 / 5) + normalise_score(0.5, 1 / 3)) / 3
    assert values["musr"] == pytest.approx(musr)
    assert values["musr"] == pytest.approx((20.0 + 0.0 + 25.0) / 3)
    assert values["bbh"] == pytest.approx(expected_bbh())
    six = [values[key] for key in ("ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro")]
    assert values[AVERAGE_KEY] == pytest.approx(sum(six) / 6)
    assert all(value.flags == () for value in result.columns)
    assert column(result, "gpqa").raw == 0.60  # the "Raw" score next to the normalised one


def test_v2_standard_errors():
    result = evaluate(OPEN_LLM_V2, v2_rows())
    # one part: se scaled by 100 / (1 - c)
    assert column(result, "gpqa").stderr == pytest.approx(0.015 * 100 / 0.75)
    assert column(result, "mmlu_pro").stderr == pytest.approx(0.005 * 100 / 0.9)
    # several parts: sqrt(sum of squares) / k
    musr_errors = [0.03 * 100 / (1 - 1 / choices) for choices in MUSR_CHOICES.values()]
    assert column(result, "musr").stderr == pytest.approx(math.sqrt(sum(e * e for e in musr_errors)) / 3)
    # IFEval's instruction-level stderr is "N/A": the column has none, and so has the average
    assert column(result, "ifeval").stderr is None
    assert result.average.stderr is None


def test_v2_missing_subtask_and_incomplete_average():
    rows = [r for r in v2_rows() if r.task != "leaderboard_bbh_navigate"]
    rows.append(row("leaderboard_bbh", "acc_norm", 0.5, n_shot=3))  # the group alone cannot be normalised
    result = evaluate(OPEN_LLM_V2, rows)
    bbh = column(result, "bbh")
    assert bbh.value is None and bbh.flags == (FLAG_MISSING,) and "leaderboard_bbh_" in bbh.notes[0]
    assert result.average.value is None
    assert result.average.flags[0] == FLAG_INCOMPLETE
    assert "missing: BBH" in result.average.notes[0]
    assert result.values()["gpqa"] is not None


# ---------------------------------------------------------------------------------------------
# Open LLM Leaderboard v1


def v1_rows_v04() -> list[HarnessRow]:
    rows = [
        row("arc_challenge", "acc_norm", 0.6, n_shot=25),
        row("hellaswag", "acc_norm", 0.8, n_shot=10),
        row("truthfulqa_mc2", "acc", 0.45, n_shot=0),
        row("winogrande", "acc", 0.75, n_shot=5),
        row("gsm8k", "exact_match", 0.3, filter="strict-match", n_shot=5),
        row("gsm8k", "exact_match", 0.35, filter="flexible-extract", n_shot=5),
    ]
    rows += [row(f"mmlu_{subject}", "acc", 0.3 + 0.01 * (i % 10), n_shot=5, stderr=0.04)
             for i, subject in enumerate(MMLU_SUBJECTS)]
    rows.append(row("mmlu", "acc", 0.99, n_shot=5))  # weighted group: not used when subjects are there
    return rows


def test_v1_columns_from_v04_task_names():
    result = evaluate(OPEN_LLM_V1, v1_rows_v04())
    values = result.values()
    mmlu = sum(0.3 + 0.01 * (i % 10) for i in range(57)) / 57 * 100
    assert values == pytest.approx({"arc": 60.0, "hellaswag": 80.0, "mmlu": mmlu, "truthfulqa": 45.0,
                                    "winogrande": 75.0, "gsm8k": 30.0,
                                    AVERAGE_KEY: (60 + 80 + mmlu + 45 + 75 + 30) / 6})
    assert column(result, "mmlu").stderr == pytest.approx(math.sqrt(57 * 4.0 ** 2) / 57)
    assert all(not value.flags for value in result.columns)


def test_v1_mmlu_falls_back_to_the_weighted_group_with_a_flag():
    rows = [r for r in v1_rows_v04() if not r.task.startswith("mmlu_")]
    mmlu = column(evaluate(OPEN_LLM_V1, rows), "mmlu")
    assert mmlu.value == pytest.approx(99.0)
    assert mmlu.flags == (FLAG_FALLBACK,) and "weighted" in mmlu.notes[0]


def test_v1_columns_from_v03_task_names():
    rows = [
        row("arc_challenge", "acc_norm", 0.5, n_shot=25),
        row("hellaswag", "acc_norm", 0.7, n_shot=10),
        row("truthfulqa_mc", "mc2", 0.4, n_shot=0),
        row("winogrande", "acc", 0.6, n_shot=5),
        row("gsm8k", "acc", 0.2, n_shot=5),
        *[row(f"hendrycksTest-{subject}", "acc", 0.5, n_shot=5) for subject in MMLU_SUBJECTS],
    ]
    result = evaluate(OPEN_LLM_V1, rows)
    assert result.values() == pytest.approx({"arc": 50.0, "hellaswag": 70.0, "mmlu": 50.0, "truthfulqa": 40.0,
                                             "winogrande": 60.0, "gsm8k": 20.0, AVERAGE_KEY: 290 / 6})
    assert all(not value.flags for value in result.columns)


def test_n_shot_and_limit_flags():
    rows = [r for r in v1_rows_v04() if r.task != "arc_challenge"]
    rows.append(row("arc_challenge", "acc_norm", 0.6, n_shot=0))
    rows = [r for r in rows if r.task != "hellaswag"] + [row("hellaswag", "acc_norm", 0.8, n_shot=10, limit=100.0)]
    rows = [r for r in rows if r.task != "winogrande"] + [row("winogrande", "acc", 0.7, n_shot=None)]
    result = evaluate(OPEN_LLM_V1, rows)
    arc, hellaswag, winogrande = (column(result, key) for key in ("arc", "hellaswag", "winogrande"))
    assert arc.flags == (FLAG_N_SHOT,) and "run with 0-shot; the preset uses 25-shot" in arc.notes
    assert arc.value == pytest.approx(60.0) and arc.warn  # still shown, with a warning mark
    assert hellaswag.flags == (FLAG_LIMIT,) and "--limit" in hellaswag.notes[0]
    assert winogrande.flags == (FLAG_N_SHOT_UNKNOWN,)
    assert result.average.value is not None
    assert result.average.flags == (FLAG_N_SHOT, FLAG_N_SHOT_UNKNOWN, FLAG_LIMIT)
    assert any(note.startswith("ARC: ") for note in result.average.notes)


def test_limit_seen_through_n_samples():
    rows = [row("arc_challenge", "acc_norm", 0.6, n_shot=25, samples=(1172, 50))]
    assert column(evaluate(OPEN_LLM_V1, rows), "arc").flags == (FLAG_LIMIT,)


def test_duplicate_scores_prefer_full_runs_at_the_right_n_shot_then_the_newest():
    old, new = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [
        row("gsm8k", "exact_match", 0.9, filter="strict-match", n_shot=5, limit=10.0, when=new, sha="a" * 64),
        row("gsm8k", "exact_match", 0.8, filter="strict-match", n_shot=8, when=new, sha="b" * 64),
        row("gsm8k", "exact_match", 0.3, filter="strict-match", n_shot=5, when=old, sha="c" * 64),
        row("gsm8k", "exact_match", 0.4, filter="strict-match", n_shot=5, when=new, sha="d" * 64),
    ]
    gsm8k = column(evaluate(OPEN_LLM_V1, rows), "gsm8k")
    assert gsm8k.value == pytest.approx(40.0) and gsm8k.sources == ("d" * 64,) and gsm8k.flags == ()


# ---------------------------------------------------------------------------------------------
# Custom column sets, on the real files


def test_custom_set_on_the_real_local_completions_file():
    internal = custom_column_set("internal", "Internal", [
        {"task": "mini_mc", "metric": "acc", "label": "Mini MC", "n_shot": 2, "scale": 100},
        {"task": "mini_gen", "metric": "exact_match,strict-match", "label": "Mini Gen", "n_shot": 2, "scale": 100},
        {"key": "gen_flex", "task": "mini_gen", "metric": "exact_match", "filter": "flexible-extract",
         "label": "Mini Gen (flexible)"},
    ], average=True)
    run = read_harness_file(reference_file("v0.4.13-local-completions"))
    result = evaluate(internal, run.rows)
    assert result.values() == pytest.approx({"mini_mc": 75.0, "mini_gen": 200 / 3, "gen_flex": 2 / 3,
                                             AVERAGE_KEY: (75.0 + 200 / 3 + 2 / 3) / 3})
    assert column(result, "mini_mc").stderr == pytest.approx(16.366341767699427)
    assert all(value.flags == () for value in result.columns)
    assert column(result, "mini_mc").sources == (run.source_sha256,)
    json.dumps(result.to_dict(), allow_nan=False)


def test_custom_set_flags_a_different_n_shot_in_a_real_file():
    internal = custom_column_set("internal", "Internal", [{"task": "mini_mc", "metric": "acc_norm",
                                                           "label": "Mini MC", "n_shot": 5}])
    run = read_harness_file(reference_file("v0.3.0"))
    value = evaluate(internal, run.rows).columns[0]
    assert value.value == pytest.approx(0.375) and value.flags == (FLAG_N_SHOT,)
    assert evaluate(internal, run.rows).average is None


def test_presets_find_nothing_in_the_mini_files():
    run = read_harness_file(reference_file("v0.4.13-dummy-group"))
    result = evaluate(OPEN_LLM_V2, run.rows)
    assert all(value.value is None and value.flags == (FLAG_MISSING,) for value in result.columns)
    assert result.average.value is None


@pytest.mark.parametrize("columns, message", [
    ([], "has no columns"),
    ([{"task": "t", "metric": "acc"}], "non-empty string 'label'"),
    ([{"task": "t", "metric": "", "label": "T"}], "non-empty string 'metric'"),
    ([{"task": "t", "metric": "acc", "label": "T", "weight": 2}], "unknown field(s) weight"),
    ([{"task": "t", "metric": "acc", "label": "T"}, {"task": "t", "metric": "acc_norm", "label": "T2"}],
     "used twice"),
    ([{"key": "average", "task": "t", "metric": "acc", "label": "T"}], "reserved"),
    ([{"task": "t", "metric": "acc,none", "filter": "strict", "label": "T"}], "disagree"),
    ([{"task": "t", "metric": "acc", "label": "T", "n_shot": -1}], "n_shot"),
    ([{"task": "t", "metric": "acc", "label": "T", "scale": float("nan")}], "scale"),
    (["t:acc"], "expected an object"),
])
def test_custom_set_validation(columns, message):
    with pytest.raises(PresetError) as caught:
        custom_column_set("internal", "Internal", columns)
    assert message in str(caught.value)


def test_custom_set_cannot_take_a_preset_key():
    with pytest.raises(PresetError, match="built-in preset"):
        custom_column_set("open_llm_v1", "Mine", [{"task": "t", "metric": "acc", "label": "T"}])


@pytest.mark.parametrize("column_set", [
    *PRESETS.values(),
    custom_column_set("internal", "Internal", [{"task": "qa", "metric": "f1", "label": "QA", "scale": 100}]),
], ids=lambda c: c.key)
def test_column_sets_round_trip_through_json(column_set):
    stored = json.loads(json.dumps(column_set.to_dict(), allow_nan=False))
    if column_set.key in PRESETS:
        # a stored copy of a built-in preset is the preset itself, so it may not be re-registered
        stored["key"] = "copy"
        column_set = ColumnSet(**{**column_set.__dict__, "key": "copy"})
    assert ColumnSet.from_dict(stored) == column_set


def test_from_dict_refuses_broken_definitions():
    with pytest.raises(PresetError, match="not a column set definition"):
        ColumnSet.from_dict({"key": "x", "label": "X", "columns": [{"key": "a"}]})
    broken = custom_column_set("x", "X", [{"task": "t", "metric": "acc", "label": "T"}]).to_dict()
    broken["columns"][0]["recipes"][0]["parts"][0]["chance"] = 1.0
    with pytest.raises(PresetError, match=r"chance level must be in \[0, 1\)"):
        ColumnSet.from_dict(broken)


def test_column_table_for_correlation():
    first = evaluate(OPEN_LLM_V2, v2_rows())
    second = evaluate(OPEN_LLM_V2, [r for r in v2_rows() if r.task != "leaderboard_gpqa"])
    table = column_table({"model-a": first, "model-b": second})
    assert set(table) == {"ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro", AVERAGE_KEY}
    assert table["gpqa"] == {"model-a": pytest.approx(46.666666666666664), "model-b": None}
    assert table[AVERAGE_KEY]["model-b"] is None
