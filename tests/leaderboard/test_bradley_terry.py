"""Bradley-Terry: optimality, agreement with independent solvers, symmetries, tie options, anchor,
degenerate data."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.optimize import minimize

from leaderboard.engine import (
    ConvergenceError, DegenerateDataError, PairOutcomes, RatingScale, TiePolicy, fit_bradley_terry, log_likelihood,
    rate,
)
from leaderboard.engine.bradley_terry import gradient, solve_pairwise_logit

from .conftest import simulate_votes


def per_battle_arrays(votes, names, policy=TiePolicy()):
    """One row per counted battle: indices of both sides and the score of side A."""
    index = {name: k for k, name in enumerate(names)}
    rows = [(index[a], index[b], policy.score_of_a(w)) for a, b, w in votes if policy.score_of_a(w) is not None]
    i, j, y = (np.array(column) for column in zip(*rows))
    return i, j, y.astype(float)


def scipy_per_battle_fit(votes, names, start):
    """Per-battle logistic regression (ties as y = 1/2) solved by scipy from another start."""
    i, j, y = per_battle_arrays(votes, names)
    n = len(names)

    def negative_loglik(theta):
        d = theta[i] - theta[j]
        value = np.sum(y * np.logaddexp(0, -d) + (1 - y) * np.logaddexp(0, d))
        residual = 1 / (1 + np.exp(-d)) - y
        return value, np.bincount(i, residual, n) - np.bincount(j, residual, n)

    result = minimize(negative_loglik, start, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 10_000})
    return result.x - result.x.mean(), -result.fun


def test_gradient_vanishes_at_the_solution(small_arena):
    pairs = PairOutcomes.from_rows(small_arena).scored()
    fit = fit_bradley_terry(pairs)
    assert fit.converged and fit.l2 == 0
    recomputed = np.abs(gradient(fit.theta, pairs)).max()
    assert recomputed <= 1e-6 * pairs.battles
    assert recomputed == pytest.approx(fit.max_gradient, abs=1e-9)
    assert fit.max_step <= 1e-8
    assert abs(fit.theta.sum()) < 1e-9


def test_loglikelihood_at_least_scipy_from_another_start_and_same_ratings(small_arena):
    outcomes = PairOutcomes.from_rows(small_arena)
    pairs = outcomes.scored()
    fit = fit_bradley_terry(pairs)
    start = np.random.default_rng(3).normal(0, 2, pairs.n_models)
    theta_scipy, loglik_scipy = scipy_per_battle_fit(small_arena, outcomes.names, start)
    # The aggregated likelihood equals the per-battle one, so both are on the same footing.
    assert log_likelihood(fit.theta, pairs) == pytest.approx(loglik_scipy, rel=1e-12)
    assert log_likelihood(fit.theta, pairs) >= loglik_scipy - 1e-9
    points = RatingScale().points_per_unit
    assert np.abs(fit.theta - theta_scipy).max() * points < 1e-3


def test_per_battle_rows_give_the_aggregated_solution(small_arena):
    outcomes = PairOutcomes.from_rows(small_arena)
    aggregated = fit_bradley_terry(outcomes.scored())
    i, j, y = per_battle_arrays(small_arena, outcomes.names)
    per_battle = solve_pairwise_logit(i, j, np.ones(len(i)), y, outcomes.n_models)
    assert per_battle.converged
    np.testing.assert_allclose(per_battle.theta, aggregated.theta, atol=1e-9)


def test_swapping_sides_and_winners_changes_nothing(small_arena):
    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie", "tie (bothbad)": "tie (bothbad)"}
    swapped = [(b, a, flip[w]) for a, b, w in small_arena]
    first = rate(small_arena, bootstrap_rounds=0).ratings
    second = rate(swapped, bootstrap_rounds=0).ratings
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == pytest.approx(second[name], abs=1e-9)


def test_row_order_does_not_matter_for_bradley_terry(small_arena):
    shuffled = list(small_arena)
    random.Random(11).shuffle(shuffled)
    first = rate(small_arena, bootstrap_rounds=50, seed=4)
    second = rate(shuffled, bootstrap_rounds=50, seed=4)
    for a, b in zip(first.models, second.models):
        assert a.model == b.model
        assert a.rating == pytest.approx(b.rating, abs=1e-9)
        assert a.ci_lower == pytest.approx(b.ci_lower, abs=1e-6)  # same counts, same seed, same resamples
    # Online Elo depends on the order by design.
    assert any(abs(a.elo - b.elo) > 1e-6 for a, b in zip(first.models, second.models))


def test_ties_count_half_a_win_for_each_side(small_arena):
    # Doubling every decisive vote and replacing each tie by one win each way doubles the
    # log-likelihood, so the maximiser is the same.
    doubled = []
    for a, b, w in small_arena:
        if w in ("tie", "tie (bothbad)"):
            doubled += [(a, b, "model_a"), (a, b, "model_b")]
        else:
            doubled += [(a, b, w), (a, b, w)]
    with_ties = rate(small_arena, bootstrap_rounds=0).ratings
    as_wins = rate(doubled, bootstrap_rounds=0).ratings
    for name in with_ties:
        assert with_ties[name] == pytest.approx(as_wins[name], abs=1e-8)


def test_tie_options_match_filtering_the_votes(small_arena):
    no_ties = [v for v in small_arena if v[2] in ("model_a", "model_b")]
    no_bothbad = [v for v in small_arena if v[2] != "tie (bothbad)"]
    dropped = rate(small_arena, ties="drop", bootstrap_rounds=0)
    assert dropped.battles == len(no_ties) and dropped.dropped == len(small_arena) - len(no_ties)
    assert dropped.ratings == pytest.approx(rate(no_ties, bootstrap_rounds=0).ratings, abs=1e-9)
    no_bb = rate(small_arena, bothbad="drop", bootstrap_rounds=0)
    assert no_bb.battles == len(no_bothbad)
    assert no_bb.ratings == pytest.approx(rate(no_bothbad, bootstrap_rounds=0).ratings, abs=1e-9)
    default = rate(small_arena, bootstrap_rounds=0)
    assert default.battles == len(small_arena)
    assert default.ratings != pytest.approx(dropped.ratings, abs=1e-3)
    with pytest.raises(ValueError, match="ties must be one of"):
        rate(small_arena, ties="win")


def test_tie_policy_also_applies_to_win_rates_and_votes():
    votes = [("a", "b", "model_a"), ("a", "b", "tie"), ("b", "a", "tie (bothbad)"), ("b", "a", "model_a")]
    half = {m.model: m for m in rate(votes, bootstrap_rounds=0).models}
    assert half["a"].votes == 4 and half["a"].win_rate == pytest.approx((1 + 0.5 + 0.5) / 4)
    no_bb = {m.model: m for m in rate(votes, bothbad="drop", bootstrap_rounds=0).models}
    assert no_bb["a"].votes == 3 and no_bb["a"].win_rate == pytest.approx(1.5 / 3)
    dropped = {m.model: m for m in rate(votes, ties="drop", bootstrap_rounds=0).models}
    assert dropped["a"].votes == 2 and dropped["a"].win_rate == pytest.approx(0.5)
    assert dropped["a"].rating == pytest.approx(dropped["b"].rating)


def test_rating_scale_matches_the_win_probability(small_arena):
    result = rate(small_arena, bootstrap_rounds=0)
    r = result.ratings
    np.testing.assert_allclose(np.mean(list(r.values())), 1000.0, atol=1e-9)
    a, b = result.names[0], result.names[-1]
    expected = 1 / (1 + 10 ** ((r[b] - r[a]) / 400))
    assert result.predicted_win[0, -1] == pytest.approx(expected, rel=1e-12)
    custom = rate(small_arena, bootstrap_rounds=0, scale=100, base=math.e, initial=0).ratings
    for name in r:  # 100 points per natural unit, centred at 0
        assert custom[name] == pytest.approx((r[name] - 1000) * 100 / (400 / math.log(10)), abs=1e-9)


def test_anchor_pins_one_model_and_keeps_differences(small_arena):
    centred = rate(small_arena, bootstrap_rounds=30, seed=2)
    anchored = rate(small_arena, bootstrap_rounds=30, seed=2, anchor=("gamma", 1200.0))
    assert anchored.model("gamma").rating == pytest.approx(1200.0, abs=1e-9)
    shift = 1200.0 - centred.model("gamma").rating
    for row in centred.models:
        assert anchored.model(row.model).rating == pytest.approx(row.rating + shift, abs=1e-9)
    # The anchored model is fixed in every round, so its interval has zero width.
    assert anchored.model("gamma").ci_lower == pytest.approx(1200.0) == anchored.model("gamma").ci_upper
    assert anchored.params["anchor"] == ["gamma", 1200.0]
    with pytest.raises(ValueError, match="anchor model 'nobody'"):
        rate(small_arena, bootstrap_rounds=0, anchor=("nobody", 1000))


def test_a_model_without_wins_gets_the_weak_prior_and_a_finite_rating(small_arena):
    votes = small_arena + [("loser", "alpha", "model_b"), ("eps", "loser", "model_a"), ("loser", "gamma", "model_b")]
    result = rate(votes, bootstrap_rounds=20, seed=1)
    assert all(np.isfinite([m.rating, m.ci_lower, m.ci_upper]).all() for m in result.models)
    assert result.models[-1].model == "loser"
    assert result.solver["regularisation"]["kind"] == "l2"
    assert "loser" in result.solver["regularisation"]["reason"]
    assert result.degeneracy["no_wins"] == ["loser"]
    with pytest.raises(DegenerateDataError, match="no wins or ties: loser"):
        rate(votes, bootstrap_rounds=0, degenerate="error")


def test_an_unbeaten_model_is_reported_too():
    votes = [("champ", "x", "model_a"), ("y", "champ", "model_b"), ("x", "y", "model_a"), ("y", "x", "model_a")]
    with pytest.raises(DegenerateDataError, match="no losses or ties: champ"):
        rate(votes, bootstrap_rounds=0, degenerate="error")
    result = rate(votes, bootstrap_rounds=0)
    assert result.models[0].model == "champ" and math.isfinite(result.models[0].rating)


def test_disconnected_groups_are_named_or_regularised():
    left = simulate_votes({"a1": 0.5, "a2": 0.0, "a3": -0.5}, 600, seed=1)
    right = simulate_votes({"b1": 0.3, "b2": -0.3}, 400, seed=2)
    with pytest.raises(DegenerateDataError, match=r"2 groups of models never compared.*\{a1, a2, a3\}; \{b1, b2\}"):
        rate(left + right, bootstrap_rounds=0, degenerate="error")
    result = rate(left + right, bootstrap_rounds=10, seed=0)
    assert all(math.isfinite(m.rating) for m in result.models)
    assert len(result.degeneracy["groups"]) == 2
    # Within a group the prior barely moves the differences.
    alone = rate(left, bootstrap_rounds=0).ratings
    together = result.ratings
    assert (together["a1"] - together["a3"]) == pytest.approx(alone["a1"] - alone["a3"], abs=1.0)


def test_a_model_with_only_dropped_votes_is_kept_and_provisional():
    votes = simulate_votes({"a": 0.2, "b": 0.0, "c": -0.2}, 300, seed=3) + [("ghost", "a", "tie")]
    result = rate(votes, ties="drop", bootstrap_rounds=0)
    ghost = result.model("ghost")
    assert ghost.votes == 0 and ghost.provisional and ghost.win_rate is None and ghost.elo is None
    assert math.isfinite(ghost.rating)
    with pytest.raises(DegenerateDataError, match="no counted battles: ghost"):
        rate(votes, ties="drop", bootstrap_rounds=0, degenerate="error")


def test_no_battles_is_a_clear_error():
    with pytest.raises(ValueError, match="no votes"):
        rate([], bootstrap_rounds=0)
    with pytest.raises(ValueError, match="all 2 votes are ties"):
        rate([("a", "b", "tie"), ("b", "a", "tie (bothbad)")], ties="drop", bootstrap_rounds=0)


def test_bad_votes_name_their_position():
    with pytest.raises(ValueError, match="vote 2: winner must be one of"):
        rate([("a", "b", "model_a"), ("a", "b", "A")], bootstrap_rounds=0)
    with pytest.raises(ValueError, match="vote 1: a model cannot battle itself"):
        rate([("a", "a", "model_a")], bootstrap_rounds=0)


def test_the_solver_refuses_to_report_an_unconverged_fit(small_arena):
    pairs = PairOutcomes.from_rows(small_arena).scored()
    with pytest.raises(ConvergenceError, match="did not converge in 1 Newton steps"):
        fit_bradley_terry(pairs, max_iter=1)
    fit = solve_pairwise_logit(pairs.i, pairs.j, pairs.battles_per_pair, pairs.score_i, pairs.n_models,
                               max_iter=1, raise_on_failure=False)
    assert not fit.converged and fit.iterations == 1


def test_extreme_but_identifiable_data_converge():
    # 999 to 1 and 1 to 999: strengths near +-7 natural units, still an exact finite fit.
    votes = [("a", "b", "model_a")] * 999 + [("a", "b", "model_b")]
    votes += [("b", "c", "model_a")] * 999 + [("c", "b", "model_a")]
    result = rate(votes, bootstrap_rounds=0)
    r = result.ratings
    assert result.solver["converged"]
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(999), abs=1e-6)
    assert r["b"] - r["c"] == pytest.approx(400 * math.log10(999), abs=1e-6)
