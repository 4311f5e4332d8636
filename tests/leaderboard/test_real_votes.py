"""The engine on 25,938 real Chatbot Arena votes (April-June 2023, single-turn English)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import minimize

from leaderboard.engine import PairOutcomes, RatingScale, fit_bradley_terry, log_likelihood, rate
from leaderboard.engine.bradley_terry import gradient
from leaderboard.engine.naive import capped_lbfgs_fit, fixed_mm_fit

from .test_bradley_terry import per_battle_arrays


@pytest.fixture(scope="module")
def real_result(real_votes):
    started = time.perf_counter()
    result = rate(real_votes, bootstrap_rounds=1000, seed=2023, min_votes=800)
    print(f"\nrate() on {len(real_votes):,} real votes with 1000 bootstrap rounds: {time.perf_counter() - started:.2f} s")
    return result


def test_exact_fit_meets_the_convergence_criterion(real_result):
    solver = real_result.solver
    print(f"\nNewton steps {solver['iterations']}, max |gradient| {solver['max_gradient']:.2e} "
          f"(threshold {solver['gradient_threshold']:.2e}), last Newton step {solver['max_step']:.1e}")
    assert real_result.battles == 25_938 and len(real_result.models) == 20
    assert solver["converged"] and solver["regularisation"] is None
    assert solver["max_gradient"] <= 1e-6 * real_result.battles
    assert real_result.bootstrap["max_gradient_ratio"] <= 1.0


def test_ordering_is_sane(real_result):
    print("\nrank  model                      rating    95% CI            votes  win rate   elo")
    for row in real_result.models[:10]:
        print(f"{row.rank_ub:>4}  {row.model:<24} {row.rating:8.1f}  [{row.ci_lower:7.1f}, {row.ci_upper:7.1f}]"
              f"  {row.votes:6d}  {row.win_rate:6.1%}  {row.elo:7.1f}")
    order = [row.model for row in real_result.models]
    assert order[0] == "gpt-4" and real_result.models[0].rank_ub == 1
    assert set(order[:4]) == {"gpt-4", "claude-v1", "claude-instant-v1", "gpt-3.5-turbo"}
    assert set(order[-3:]) <= {"llama-13b", "dolly-v2-12b", "stablelm-tuned-alpha-7b"}
    assert order.index("vicuna-13b") < order.index("vicuna-7b")
    for row in real_result.models:
        assert row.ci_lower < row.rating < row.ci_upper
    provisional = {row.model for row in real_result.models if row.provisional}
    assert provisional == {"guanaco-33b", "gpt4all-13b-snoozy"}  # under 800 votes, still listed


def test_per_battle_logistic_regression_agrees(real_votes):
    outcomes = PairOutcomes.from_rows(real_votes)
    pairs = outcomes.scored()
    fit = fit_bradley_terry(pairs)
    i, j, y = per_battle_arrays(real_votes, outcomes.names)
    n = pairs.n_models

    def negative_loglik(theta):
        d = theta[i] - theta[j]
        residual = 1 / (1 + np.exp(-d)) - y
        return (np.sum(y * np.logaddexp(0, -d) + (1 - y) * np.logaddexp(0, d)),
                np.bincount(i, residual, n) - np.bincount(j, residual, n))

    start = np.random.default_rng(1).normal(0, 1, n)
    reference = minimize(negative_loglik, start, jac=True, method="L-BFGS-B",
                         options={"maxiter": 10_000, "gtol": 1e-9, "ftol": 0})
    theta_ref = reference.x - reference.x.mean()
    points = RatingScale().points_per_unit
    difference = np.abs(theta_ref - fit.theta).max() * points
    print(f"\nper-battle L-BFGS (scipy, {reference.nit} iterations) vs exact Newton: max {difference:.2e} points")
    assert difference < 0.01
    assert log_likelihood(fit.theta, pairs) >= -reference.fun - 1e-9


def test_fits_that_stop_early_differ_from_the_exact_fit(real_votes):
    pairs = PairOutcomes.from_rows(real_votes).scored()
    exact = fit_bradley_terry(pairs)
    scale = RatingScale()
    exact_ratings = scale.to_ratings(exact.theta)
    exact_loglik = log_likelihood(exact.theta, pairs)
    threshold = 1e-6 * pairs.battles
    candidates = {
        "L-BFGS, sklearn-style tolerance, cap 100": capped_lbfgs_fit(pairs, max_iter=100),
        "L-BFGS, cap 10 iterations": capped_lbfgs_fit(pairs, max_iter=10),
        "MM, 10 iterations": fixed_mm_fit(pairs, 10),
        "MM, 30 iterations": fixed_mm_fit(pairs, 30),
        "MM, 100 iterations": fixed_mm_fit(pairs, 100),
    }
    print(f"\n{'fit':<42} {'max |diff| (points)':>20} {'max |gradient| / threshold':>28}")
    exact_label = f"exact Newton ({exact.iterations} steps)"
    print(f"{exact_label:<42} {0.0:>20.2e} {exact.max_gradient / threshold:>28.2e}")
    differences = {}
    for label, naive in candidates.items():
        differences[label] = np.abs(scale.to_ratings(naive.theta) - exact_ratings).max()
        naive_gradient = np.abs(gradient(naive.theta, pairs)).max()
        print(f"{label:<42} {differences[label]:>20.2e} {naive_gradient / threshold:>28.2e}")
        assert log_likelihood(naive.theta, pairs) <= exact_loglik + 1e-9
    assert differences["MM, 10 iterations"] > 1.0
    assert differences["L-BFGS, cap 10 iterations"] > 0.05
