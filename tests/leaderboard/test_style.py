"""Style control: markdown counting, feature definition, a planted length effect recovered."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from leaderboard.engine import STYLE_FEATURES, answer_style, fit_style_control, style_features
from leaderboard.engine.style import raw_style_features, style_counts

ANSWER = """# Plan
Some **bold** words and __more bold__.

## Steps
1. first
2. second
- bullet
* another **one**

```python
# not a header
- not a list
x = "**not bold**"
```
"""


def test_answer_style_counts_markdown_outside_code():
    length, headers, lists, bold = answer_style(ANSWER)
    assert length == len(ANSWER)
    assert headers == 2 and lists == 4 and bold == 3
    assert answer_style("one two  three\nfour", length_unit="words")[0] == 4
    assert answer_style("plain text, *not bold*, #hashtag").tolist()[1:] == [0, 0, 0]
    with pytest.raises(ValueError):
        answer_style("x", length_unit="tokens")


def test_feature_is_normalised_difference_then_standardised():
    a, b = style_counts("x" * 30, "y" * 9)
    assert raw_style_features(a, b)[0] == pytest.approx((30 - 9) / (30 + 9 + 1))
    counts_a = np.array([[3.0, 1], [1, 1], [0, 1]])
    counts_b = np.array([[1.0, 1], [3, 1], [0, 1]])
    features, mean, std = style_features(counts_a, counts_b)
    raw = np.array([2 / 5, -2 / 5, 0])
    np.testing.assert_allclose(features[:, 0], (raw - raw.mean()) / raw.std())
    assert std[1] == 0 and (features[:, 1] == 0).all()  # constant feature: no information


def planted_arena(n_battles=20_000, beta_length=0.5, seed=0):
    """Stronger models also write longer answers; raters reward length on top of quality."""
    rng = np.random.default_rng(seed)
    names = [f"m{k}" for k in range(8)]
    theta = np.linspace(0.8, -0.8, 8)
    typical_length = np.linspace(1500, 400, 8)
    a = rng.integers(0, 8, n_battles)
    b = (a + rng.integers(1, 8, n_battles)) % 8
    counts_a = np.column_stack([rng.lognormal(np.log(typical_length[a]), 0.5), rng.poisson(1.0, (n_battles, 3))])
    counts_b = np.column_stack([rng.lognormal(np.log(typical_length[b]), 0.5), rng.poisson(1.0, (n_battles, 3))])
    features, _, _ = style_features(counts_a, counts_b)
    p_a = expit(theta[a] - theta[b] + beta_length * features[:, 0])
    winner = np.where(rng.random(n_battles) < p_a, "model_a", "model_b")
    return [names[k] for k in a], [names[k] for k in b], winner.tolist(), counts_a, counts_b, names, theta


def test_planted_length_effect_is_recovered():
    model_a, model_b, winner, counts_a, counts_b, names, theta = planted_arena()
    result = fit_style_control(model_a, model_b, winner, counts_a, counts_b)
    assert result.solver["converged"] and result.solver["max_gradient"] <= 1e-6 * len(winner)
    assert result.coefficients["length"] == pytest.approx(0.5, abs=0.08)
    for other in STYLE_FEATURES[1:]:
        assert abs(result.coefficients[other]) < 0.08
    assert result.coefficient_points["length"] == pytest.approx(result.coefficients["length"] * 400 / np.log(10))
    truth = 1000 + 400 / np.log(10) * (theta - theta.mean())
    controlled = np.array([result.ratings[name] for name in names])
    uncontrolled = np.array([result.uncontrolled[name] for name in names])
    error_controlled = np.abs(controlled - truth).max()
    error_uncontrolled = np.abs(uncontrolled - truth).max()
    print(f"\nplanted length effect 0.5, fitted {result.coefficients['length']:.3f}; max rating error "
          f"{error_controlled:.1f} points with style control, {error_uncontrolled:.1f} without")
    assert error_controlled < 25
    assert error_uncontrolled > 2 * error_controlled


def test_style_fit_is_the_exact_maximum_likelihood():
    model_a, model_b, winner, counts_a, counts_b, names, _ = planted_arena(n_battles=4000, seed=1)
    result = fit_style_control(model_a, model_b, winner, counts_a, counts_b)
    index = {name: k for k, name in enumerate(names)}
    i = np.array([index[m] for m in model_a])
    j = np.array([index[m] for m in model_b])
    y = (np.array(winner) == "model_a").astype(float)
    x, _, _ = style_features(counts_a, counts_b)
    n = len(names)

    def negative_loglik(params):
        d = params[:n][i] - params[:n][j] + x @ params[n:]
        return np.sum(y * np.logaddexp(0, -d) + (1 - y) * np.logaddexp(0, d))

    start = np.random.default_rng(0).normal(0, 1, n + 4)
    reference = minimize(negative_loglik, start, method="BFGS", options={"gtol": 1e-8, "maxiter": 10_000})
    assert -reference.fun <= result.solver["log_likelihood"] + 1e-8
    assert result.solver["log_likelihood"] == pytest.approx(-reference.fun, rel=1e-10)
    np.testing.assert_allclose([result.coefficients[f] for f in STYLE_FEATURES], reference.x[n:], atol=1e-4)


def markdown_answer(rng, words: int) -> str:
    lines = ["word " * words]
    lines += ["# Title"] * int(rng.integers(0, 2))
    lines += ["- item"] * int(rng.integers(0, 4))
    lines += ["**bold**"] * int(rng.integers(0, 3))
    return "\n".join(lines)


def test_texts_to_features_end_to_end_with_ties_and_bootstrap():
    rng = np.random.default_rng(5)
    typical_words = {"verbose": 300, "middle": 120, "terse": 40}
    names = list(typical_words)
    model_a, model_b, winner, counts_a, counts_b = [], [], [], [], []
    for k in range(900):
        a, b = rng.choice(names, 2, replace=False)
        ca, cb = style_counts(markdown_answer(rng, int(rng.poisson(typical_words[a]))),
                              markdown_answer(rng, int(rng.poisson(typical_words[b]))), length_unit="words")
        model_a.append(str(a)), model_b.append(str(b)), counts_a.append(ca), counts_b.append(cb)
        winner.append(["model_a", "model_b", "tie", "tie (bothbad)"][k % 4])
    result = fit_style_control(model_a, model_b, winner, counts_a, counts_b, bootstrap_rounds=50, seed=1)
    assert result.battles == 900 and set(result.names) == set(names)
    assert not result.solver["singular_hessian"] and result.solver["converged"]
    assert all(np.isfinite(list(result.ratings.values())))
    for name in names:
        assert result.ci_lower[name] <= result.ratings[name] <= result.ci_upper[name]
    assert set(result.coefficient_ci) == set(STYLE_FEATURES)
    assert fit_style_control(model_a, model_b, winner, counts_a, counts_b, ties="drop").battles == 450


def test_a_feature_that_copies_model_identity_is_flagged():
    # Only one model ever uses lists: "uses lists" and "is that model" cannot be told apart.
    rng = np.random.default_rng(0)
    model_a, model_b, winner, counts_a, counts_b = [], [], [], [], []
    for k in range(400):
        a, b = ("lists", "prose") if k % 2 else ("prose", "lists")
        ca, cb = style_counts(("- x\n" * 3 if a == "lists" else "") + "w " * int(rng.integers(5, 50)),
                              ("- x\n" * 3 if b == "lists" else "") + "w " * int(rng.integers(5, 50)))
        model_a.append(a), model_b.append(b), counts_a.append(ca), counts_b.append(cb)
        winner.append("model_a" if rng.random() < 0.6 else "model_b")
    result = fit_style_control(model_a, model_b, winner, counts_a, counts_b)
    assert result.solver["singular_hessian"]
    assert result.constant_features == ("headers", "bold") and result.coefficients["bold"] == 0.0
    assert all(np.isfinite(list(result.ratings.values())))


def test_a_bad_battle_is_named_by_its_row_and_dropped_ties_are_not_fitted():
    counts = np.ones((3, len(STYLE_FEATURES)))
    with pytest.raises(ValueError, match="battle 2: a model cannot battle itself"):
        fit_style_control(["a", "b", "a"], ["b", "b", "c"], ["model_a", "tie", "model_b"], counts, counts)
    with pytest.raises(ValueError, match="battle 3: winner must be one of"):
        fit_style_control(["a", "b", "a"], ["b", "c", "c"], ["model_a", "tie", "draw"], counts, counts)
    votes = [("a", "b", "model_a"), ("b", "a", "model_a"), ("a", "b", "tie"), ("b", "a", "tie (bothbad)")] * 5
    a, b, w = zip(*votes)
    counts = np.random.default_rng(0).integers(0, 9, (len(votes), len(STYLE_FEATURES)))
    kept = fit_style_control(a, b, w, counts, counts[::-1], ties="drop")
    assert kept.battles == 10
    assert fit_style_control(a, b, w, counts, counts[::-1]).battles == 20


def test_style_bootstrap_spread_matches_refitting_resampled_battles():
    rng = np.random.default_rng(21)
    strengths = {"a": 0.6, "b": 0.2, "c": 0.0, "d": -0.5}
    names = list(strengths)
    rows = 1500
    a_idx = rng.integers(0, 4, rows)
    b_idx = (a_idx + rng.integers(1, 4, rows)) % 4
    counts_a = rng.integers(0, 400, (rows, len(STYLE_FEATURES))).astype(float)
    counts_b = rng.integers(0, 400, (rows, len(STYLE_FEATURES))).astype(float)
    length = (counts_a[:, 0] - counts_b[:, 0]) / (counts_a[:, 0] + counts_b[:, 0] + 1)
    s = np.array([strengths[n] for n in names])
    p_a = expit(s[a_idx] - s[b_idx] + 0.8 * length)
    winner = np.where(rng.random(rows) < p_a, "model_a", "model_b").tolist()
    model_a = [names[k] for k in a_idx]
    model_b = [names[k] for k in b_idx]
    boot = fit_style_control(model_a, model_b, winner, counts_a, counts_b, bootstrap_rounds=300, seed=3)
    width = np.array([boot.ci_upper[n] - boot.ci_lower[n] for n in names])
    refits = []
    for _ in range(300):
        pick = rng.integers(0, rows, rows)
        refit = fit_style_control([model_a[k] for k in pick], [model_b[k] for k in pick], [winner[k] for k in pick],
                                  counts_a[pick], counts_b[pick])
        refits.append([refit.ratings[n] for n in names])
    low, high = np.quantile(np.array(refits), [0.025, 0.975], axis=0)
    # Same distribution up to Monte Carlo error of a 95% interval at 300 rounds.
    np.testing.assert_allclose(width, high - low, rtol=0.3)


def test_uncontrolled_ratings_are_the_plain_bradley_terry_of_the_same_battles(small_arena):
    from leaderboard.engine import rate

    a, b, w = zip(*small_arena)
    counts = np.random.default_rng(3).integers(0, 50, (len(small_arena), len(STYLE_FEATURES)))
    styled = fit_style_control(a, b, w, counts, counts[::-1])
    plain = rate(small_arena, bootstrap_rounds=0)
    for row in plain.models:
        assert styled.uncontrolled[row.model] == pytest.approx(row.rating, abs=1e-6)
