"""Fits that stop early, kept only to measure how far early stopping lands from the exact fit.

``capped_lbfgs_fit`` is the common recipe: logistic regression over (pair, outcome) rows weighted
by counts (decisive votes counted twice, a tie once each way), coefficients on the log-base scale,
L-BFGS on the mean loss, stopping at an iteration cap or when the projected gradient of the mean
loss falls below ``gtol``. ``fixed_mm_fit`` runs a fixed number of Zermelo/MM iterations.
Neither is used for ratings; see ``bradley_terry`` for the exact solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from leaderboard.engine.outcomes import ScoredPairs


@dataclass(frozen=True)
class EarlyStopFit:
    theta: np.ndarray  # natural units, mean zero
    iterations: int
    message: str


def capped_lbfgs_fit(pairs: ScoredPairs, *, max_iter: int = 100, gtol: float = 1e-6, base: float = 10.0) -> EarlyStopFit:
    n = pairs.n_models
    rows_i = np.concatenate([pairs.i, pairs.i])
    rows_j = np.concatenate([pairs.j, pairs.j])
    weight = np.concatenate([2 * pairs.wins_i + pairs.ties, 2 * pairs.wins_j + pairs.ties]).astype(float)
    target = np.concatenate([np.ones(len(pairs.i)), np.zeros(len(pairs.i))])
    total = weight.sum()
    log_base = np.log(base)

    def loss_and_gradient(coef):
        d = log_base * (coef[rows_i] - coef[rows_j])
        loss = np.dot(weight, target * np.logaddexp(0, -d) + (1 - target) * np.logaddexp(0, d)) / total
        residual = weight * (expit(d) - target) * log_base / total
        return loss, np.bincount(rows_i, residual, n) - np.bincount(rows_j, residual, n)

    result = minimize(loss_and_gradient, np.zeros(n), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": gtol, "ftol": 64 * np.finfo(float).eps})
    theta = result.x * log_base
    return EarlyStopFit(theta - theta.mean(), int(result.nit), str(result.message))


def fixed_mm_fit(pairs: ScoredPairs, iterations: int = 100) -> EarlyStopFit:
    """Zermelo/MM updates ``p_i <- score_i / sum_j n_ij / (p_i + p_j)``; needs every model to have scored."""
    n = pairs.n_models
    battles = pairs.battles_per_pair.astype(float)
    scores = pairs.scores()
    if (scores <= 0).any():
        raise ValueError("MM iterations need every model to have at least one win or tie")
    strength = np.ones(n)
    for _ in range(iterations):
        per_pair = battles / (strength[pairs.i] + strength[pairs.j])
        strength = scores / (np.bincount(pairs.i, per_pair, n) + np.bincount(pairs.j, per_pair, n))
        strength /= np.exp(np.log(strength).mean())
    theta = np.log(strength)
    return EarlyStopFit(theta - theta.mean(), iterations, f"stopped after {iterations} iterations")
