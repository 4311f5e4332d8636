"""Ranks and the pairwise views of the votes: counts, observed win fractions, predicted odds."""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from leaderboard.engine.outcomes import ScoredPairs


def rank_upper_bound(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Rank (UB): 1 + the number of models whose lower bound is above this model's upper bound.

    A model is only ranked below another when their intervals do not overlap, so models that are
    statistically tied share a rank.
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def battle_count_matrix(pairs: ScoredPairs) -> np.ndarray:
    """Counted battles between each two models (symmetric, zero diagonal)."""
    n = pairs.n_models
    counts = np.zeros((n, n), dtype=np.int64)
    counts[pairs.i, pairs.j] = pairs.battles_per_pair
    counts[pairs.j, pairs.i] = pairs.battles_per_pair
    return counts


def win_fraction_matrix(pairs: ScoredPairs) -> np.ndarray:
    """Observed score of the row model against the column model (wins + half the ties) / battles.

    NaN where two models never met.
    """
    n = pairs.n_models
    fraction = np.full((n, n), np.nan)
    battles = pairs.battles_per_pair
    fraction[pairs.i, pairs.j] = pairs.score_i / battles
    fraction[pairs.j, pairs.i] = (battles - pairs.score_i) / battles
    return fraction


def predicted_win_matrix(theta: np.ndarray) -> np.ndarray:
    """Bradley-Terry probability that the row model beats the column model."""
    theta = np.asarray(theta, dtype=float)
    return expit(theta[:, None] - theta[None, :])


def win_rates(pairs: ScoredPairs) -> np.ndarray:
    """Observed average win rate against all opponents met, ties half; NaN without battles."""
    votes = pairs.votes()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(votes > 0, pairs.scores() / np.maximum(votes, 1), np.nan)


def predicted_average_win_rate(theta: np.ndarray) -> np.ndarray:
    """Predicted win probability against every other model, averaged with equal weight."""
    n = len(theta)
    if n < 2:
        return np.full(n, 0.5)
    predicted = predicted_win_matrix(theta)
    return (predicted.sum(axis=1) - 0.5) / (n - 1)
