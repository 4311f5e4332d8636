"""Rank (UB), the pairwise matrices, win rates and the provisional flag."""
from __future__ import annotations

import numpy as np
import pytest

from leaderboard.engine import (
    PairOutcomes, TiePolicy, battle_count_matrix, predicted_average_win_rate, predicted_win_matrix, provisional_flags,
    rank_upper_bound, rate, win_fraction_matrix, win_rates,
)


def test_rank_counts_models_clearly_above():
    lower = np.array([10.0, 5.0, 0.0, 21.0])
    upper = np.array([20.0, 15.0, 4.0, 30.0])
    assert rank_upper_bound(lower, upper).tolist() == [2, 2, 4, 1]


def test_overlapping_or_touching_intervals_share_a_rank():
    assert rank_upper_bound([1, 1, 1], [3, 3, 3]).tolist() == [1, 1, 1]
    # Lower bound equal to the other's upper bound is not "above" it.
    assert rank_upper_bound([5, 0], [9, 5]).tolist() == [1, 1]
    assert rank_upper_bound([5.001, 0], [9, 5]).tolist() == [1, 2]


def test_rank_ub_in_the_result_matches_the_intervals(small_arena):
    result = rate(small_arena, bootstrap_rounds=200, seed=3)
    for row in result.models:
        above = sum(other.ci_lower > row.ci_upper for other in result.models)
        assert row.rank_ub == 1 + above


VOTES = [
    ("a", "b", "model_a"), ("a", "b", "model_a"), ("b", "a", "tie"), ("b", "a", "model_a"),
    ("b", "c", "tie (bothbad)"), ("c", "b", "model_b"),
]


def test_battle_counts_and_win_fractions_by_hand():
    pairs = PairOutcomes.from_rows(VOTES).scored(TiePolicy())
    counts = battle_count_matrix(pairs)
    assert counts.tolist() == [[0, 4, 0], [4, 0, 2], [0, 2, 0]]
    fraction = win_fraction_matrix(pairs)
    assert fraction[0, 1] == pytest.approx(2.5 / 4) and fraction[1, 0] == pytest.approx(1.5 / 4)
    assert fraction[1, 2] == pytest.approx(1.5 / 2) and fraction[2, 1] == pytest.approx(0.5 / 2)
    assert np.isnan(fraction[0, 2]) and np.isnan(fraction[0, 0])
    # a: 2.5 of 4; b: 1.5 + 1.5 of 6; c: 0.5 of 2
    np.testing.assert_allclose(win_rates(pairs), [2.5 / 4, 3 / 6, 0.5 / 2])


def test_predicted_matrix_is_consistent():
    theta = np.array([0.7, 0.0, -0.7])
    predicted = predicted_win_matrix(theta)
    np.testing.assert_allclose(predicted + predicted.T, 1.0)
    np.testing.assert_allclose(np.diag(predicted), 0.5)
    assert predicted[0, 2] == pytest.approx(1 / (1 + np.exp(-1.4)))
    average = predicted_average_win_rate(theta)
    assert average[1] == pytest.approx(0.5)
    assert average[0] == pytest.approx((predicted[0, 1] + predicted[0, 2]) / 2)


def test_result_matrices_follow_the_model_order(small_arena):
    result = rate(small_arena, bootstrap_rounds=0)
    assert list(result.names) == [m.model for m in result.models]
    assert (result.battle_counts == result.battle_counts.T).all()
    assert result.battle_counts.sum() == 2 * result.battles
    per_model = result.battle_counts.sum(axis=1)
    assert per_model.tolist() == [m.votes for m in result.models]
    ratings = np.array([m.rating for m in result.models])
    diff = ratings[:, None] - ratings[None, :]
    np.testing.assert_allclose(result.predicted_win, 1 / (1 + 10 ** (-diff / 400)), rtol=1e-12)
    assert result.predicted_win[0, -1] > 0.5


def test_provisional_flags():
    assert provisional_flags(np.array([0, 5, 10, 50]), 10).tolist() == [True, True, False, False]
    assert provisional_flags(np.array([0, 1]), 0).tolist() == [True, False]  # no votes is always provisional
    with pytest.raises(ValueError):
        provisional_flags(np.array([1]), -1)


def test_provisional_models_stay_in_the_result(small_arena):
    votes = small_arena + [("newcomer", "alpha", "model_a"), ("beta", "newcomer", "tie"), ("newcomer", "eps", "model_b")]
    result = rate(votes, bootstrap_rounds=0, min_votes=100)
    newcomer = result.model("newcomer")
    assert newcomer.provisional and newcomer.votes == 3
    assert not any(m.provisional for m in result.models if m.model != "newcomer")
    assert len(result.models) == 6
    assert result.params["min_votes"] == 100
