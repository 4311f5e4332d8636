"""Rank correlation between arena scores and benchmark columns, checked against scipy."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from leaderboard.harness import (
    OPEN_LLM_V2, STATUS_CONSTANT, STATUS_OK, STATUS_TOO_FEW, HarnessRow, column_table, correlate, correlate_columns,
    evaluate, paired_scores, rank_columns,
)
from leaderboard.harness.correlation import _bootstrap, _kendall_rows, _spearman_rows

# Known data with ties on both sides.
ARENA = {"a": 1250.0, "b": 1190.5, "c": 1190.5, "d": 1100.0, "e": 1075.2, "f": 1010.0, "g": 990.0, "h": 950.0}
BENCH = {"a": 71.0, "b": 64.0, "c": 69.5, "d": 55.0, "e": 55.0, "f": 58.0, "g": 40.0, "h": 42.0}


def test_point_estimates_match_scipy_with_ties():
    result = correlate(ARENA, BENCH, column="mmlu", seed=1)
    models = sorted(ARENA)
    x, y = [ARENA[m] for m in models], [BENCH[m] for m in models]
    spearman, kendall = stats.spearmanr(x, y), stats.kendalltau(x, y)
    assert result.status == STATUS_OK and result.ok and result.message == ""
    assert result.n_models == 8 and result.n_missing == 0
    assert result.spearman == pytest.approx(spearman.statistic, abs=1e-12)
    assert result.spearman_p == pytest.approx(spearman.pvalue, abs=1e-12)
    assert result.kendall == pytest.approx(kendall.statistic, abs=1e-12)
    assert result.kendall_p == pytest.approx(kendall.pvalue, abs=1e-12)
    assert result.points[0] == ("a", 1250.0, 71.0)


def test_perfect_agreement_and_reversal():
    arena = {f"m{i}": float(i) for i in range(10)}
    same = {f"m{i}": float(i) ** 3 for i in range(10)}  # monotone, not linear
    reverse = {f"m{i}": -float(i) for i in range(10)}
    up, down = correlate(arena, same, seed=0), correlate(arena, reverse, seed=0)
    assert (up.spearman, up.kendall) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (down.spearman, down.kendall) == (pytest.approx(-1.0), pytest.approx(-1.0))
    assert up.spearman_ci.high <= 1.0 and down.kendall_ci.low >= -1.0


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the constant row, on purpose
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_resample_statistics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, 5, size=(40, 9)).astype(float)  # many ties, like bootstrap duplicates
    ys = np.round(rng.normal(size=(40, 9)), 1)
    xs[0] = 3.0  # constant: undefined
    expected_tau = [stats.kendalltau(x, y).statistic for x, y in zip(xs, ys)]
    expected_rho = [stats.spearmanr(x, y).statistic for x, y in zip(xs, ys)]
    np.testing.assert_allclose(_kendall_rows(xs, ys), expected_tau, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(_spearman_rows(xs, ys), expected_rho, atol=1e-12, equal_nan=True)
    assert math.isnan(_kendall_rows(xs, ys)[0]) and math.isnan(_spearman_rows(xs, ys)[0])


def test_bootstrap_draws_match_scipy_on_the_same_resamples():
    x = np.array([ARENA[m] for m in sorted(ARENA)])
    y = np.array([BENCH[m] for m in sorted(BENCH)])
    rho, tau = _bootstrap(x, y, 200, np.random.default_rng(5))
    picks = np.random.default_rng(5).integers(0, len(x), size=(200, len(x)))
    for i in range(0, 200, 7):
        xi, yi = x[picks[i]], y[picks[i]]
        if np.all(xi == xi[0]) or np.all(yi == yi[0]):
            assert math.isnan(rho[i]) and math.isnan(tau[i])
            continue
        assert rho[i] == pytest.approx(stats.spearmanr(xi, yi).statistic, abs=1e-12)
        assert tau[i] == pytest.approx(stats.kendalltau(xi, yi).statistic, abs=1e-12)


def test_bootstrap_interval_is_seeded_and_sensible():
    rng = np.random.default_rng(11)
    arena = {f"m{i}": float(v) for i, v in enumerate(rng.normal(1000, 80, size=40))}
    bench = {model: value / 20 + rng.normal(0, 3) for model, value in arena.items()}
    first = correlate(arena, bench, column="bbh", seed=42, bootstrap_rounds=500)
    again = correlate(arena, bench, column="bbh", seed=42, bootstrap_rounds=500)
    other = correlate(arena, bench, column="bbh", seed=43, bootstrap_rounds=500)
    assert first == again
    assert first.spearman_ci != other.spearman_ci
    assert first.seed == 42 and first.bootstrap_rounds == 500 and first.bootstrap_valid == 500
    for value, interval in ((first.spearman, first.spearman_ci), (first.kendall, first.kendall_ci)):
        assert interval.low < value < interval.high
        assert -1.0 <= interval.low < interval.high <= 1.0
    narrower = correlate(arena, bench, column="bbh", seed=42, bootstrap_rounds=500, confidence=0.5)
    assert narrower.spearman_ci.high - narrower.spearman_ci.low < first.spearman_ci.high - first.spearman_ci.low
    drawn = correlate(arena, bench, bootstrap_rounds=50)
    assert isinstance(drawn.seed, int)
    assert correlate(arena, bench, bootstrap_rounds=50, seed=drawn.seed) == drawn  # a drawn seed repeats


def test_columns_have_independent_streams():
    columns = {"x": BENCH, "y": {m: -v for m, v in BENCH.items()}}
    both = {item.column: item for item in correlate_columns(ARENA, columns, seed=9, bootstrap_rounds=300)}
    alone = correlate_columns(ARENA, {"y": columns["y"]}, seed=9, bootstrap_rounds=300)[0]
    assert both["y"] == alone


def test_missing_values_are_left_out():
    arena = dict(ARENA, ghost=1300.0, nan_arena=float("nan"))
    bench = dict(BENCH, c=None, d=float("nan"), e=float("inf"), f="58", g=True, only_bench=12.0, nan_arena=50.0)
    result = correlate(arena, bench, seed=0, min_models=3)
    assert [point[0] for point in result.points] == ["a", "b", "h"]
    # ghost, c, d, e, f, g have an arena score only; only_bench and nan_arena a benchmark value only
    assert result.n_models == 3 and result.n_missing == 8
    points, missing = paired_scores(arena, bench)
    assert (len(points), missing) == (3, 8)


def test_too_few_models_is_a_clear_result_without_nan():
    result = correlate(ARENA, {"a": 1.0, "b": 2.0, "c": None}, column="gpqa", seed=0)
    assert result.status == STATUS_TOO_FEW and not result.ok
    assert "2 model(s)" in result.message and "at least 5" in result.message
    assert result.spearman is None and result.kendall is None and result.spearman_ci is None
    json.dumps(result.to_dict(), allow_nan=False)
    assert correlate({}, {}, seed=0).status == STATUS_TOO_FEW


def test_constant_column_is_a_clear_result_without_nan():
    flat = {model: 50.0 for model in ARENA}
    result = correlate(ARENA, flat, seed=0)
    assert result.status == STATUS_CONSTANT and "same benchmark value" in result.message
    assert result.spearman is None and result.kendall_p is None
    json.dumps(result.to_dict(), allow_nan=False)
    flat_arena = correlate({model: 1000.0 for model in ARENA}, BENCH, seed=0)
    assert flat_arena.status == STATUS_CONSTANT and "same arena score" in flat_arena.message


def test_tiny_samples_report_degenerate_resamples_instead_of_a_misleading_interval():
    # Three models: about a quarter of resamples repeat one model or are otherwise tied flat.
    result = correlate({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 3.0, "c": 2.0}, min_models=3, seed=4,
                       bootstrap_rounds=400)
    assert result.status == STATUS_OK and result.spearman == pytest.approx(0.5)
    assert 0 < result.bootstrap_valid < 400
    assert (result.spearman_ci is None) == (result.bootstrap_valid < 200)
    json.dumps(result.to_dict(), allow_nan=False)
    # Two distinct values only: most resamples degenerate, so no interval at all.
    result = correlate({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 1.0, "b": 2.0, "c": 2.0}, min_models=3, seed=4,
                       bootstrap_rounds=400)
    assert result.bootstrap_valid < 200 and result.spearman_ci is None and result.kendall_ci is None


def test_no_bootstrap():
    result = correlate(ARENA, BENCH, bootstrap_rounds=0, seed=0)
    assert result.spearman is not None and result.spearman_ci is None and result.bootstrap_valid == 0


@pytest.mark.parametrize("options", [{"min_models": 2}, {"bootstrap_rounds": -1}, {"confidence": 1.0},
                                     {"confidence": 0}, {"min_models": 4.5}])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError):
        correlate(ARENA, BENCH, **options)


def test_rank_columns():
    results = correlate_columns(ARENA, {"pos": BENCH, "neg": {m: -v for m, v in BENCH.items()}, "few": {"a": 1.0}},
                                seed=0, bootstrap_rounds=0)
    assert [item.column for item in rank_columns(results)] == ["pos", "neg", "few"]
    assert [item.column for item in rank_columns(results, by="kendall")] == ["pos", "neg", "few"]
    with pytest.raises(ValueError):
        rank_columns(results, by="pearson")


def test_from_preset_results_to_correlations():
    # Eight models whose GPQA rises with the arena score and whose MMLU-PRO is missing for some.
    results = {}
    arena = {}
    for i in range(8):
        model = f"model-{i}"
        arena[model] = 1000.0 + 25 * i
        rows = [HarnessRow(model_name=model, task="leaderboard_gpqa", metric="acc_norm", filter="none",
                           value=0.26 + 0.03 * i, stderr=0.01, n_shot=0, limit=None, harness_version="0.4.x",
                           source_sha256=str(i))]
        if i % 2 == 0:
            rows.append(HarnessRow(model_name=model, task="leaderboard_mmlu_pro", metric="acc", filter="none",
                                   value=0.5 - 0.02 * i, stderr=0.01, n_shot=5, limit=None,
                                   harness_version="0.4.x", source_sha256=str(i)))
        results[model] = evaluate(OPEN_LLM_V2, rows)
    table = column_table(results)
    found = {item.column: item for item in correlate_columns(arena, table, seed=3, bootstrap_rounds=200)}
    assert found["gpqa"].spearman == pytest.approx(1.0) and found["gpqa"].n_models == 8
    assert found["mmlu_pro"].status == STATUS_TOO_FEW and found["mmlu_pro"].n_models == 4
    assert found["bbh"].status == STATUS_TOO_FEW and found["bbh"].n_models == 0
    json.dumps([item.to_dict() for item in found.values()], allow_nan=False)
