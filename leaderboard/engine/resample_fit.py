"""Bradley-Terry fits of many resamples of the same pairs, solved together near a known solution.

A bootstrap round's counts differ from the observed ones by sampling noise, so its solution is
close to the point estimate, and the point estimate's Hessian ``H0`` is close to the round's. The
rounds of a batch are iterated together with that one factorised matrix (the chord method):

    theta <- theta - H0^-1 g(theta)

Each iteration costs one gradient for the whole batch (a gather, an exponential and a sparse
product over rows x rounds) and a triangular solve with one right-hand side per round; no Hessian
is built or factorised per round. The error shrinks by a factor ``rho`` (the size of
``I - H0^-1 H(theta)``, a few percent at arena counts) per iteration: linear convergence, but each
step costs about a tenth of a Newton step at 200 models.

A round stops on the point estimate's criterion: max |gradient| <= tolerance * battles, and the step
still to take is below step_tolerance. The chord step measures the remaining error only up to the
factor 1 / (1 - rho), so the round also needs its last two steps to have shrunk at least twofold
(rho <= 1/2) and its step to be below half of step_tolerance; the step is then taken. A round that
has not stopped after ``CHORD_MAX_ITER`` iterations, or stops shrinking, is handed back to be
solved by Newton's method (see ``solve_pairwise_logit``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from leaderboard.engine.blas import single_threaded_blas
from leaderboard.engine.bradley_terry import PairDesign, strength_hessian

CHORD_MAX_ITER = 30
SHRINK_AT_LEAST = 0.5  # the largest accepted ratio of successive steps (rho)


@dataclass(frozen=True)
class ChordBatch:
    theta: np.ndarray  # rounds x models; rows of rounds not solved hold the last iterate
    solved: np.ndarray  # bool per round: met the criterion
    iterations: int  # chord iterations over the rounds of the batch (each round counted)
    max_gradient_ratio: float  # worst max |gradient| / threshold over the solved rounds


class ChordSolver:
    """The point estimate's Hessian, factorised once, for every batch of resamples of the same pairs."""

    def __init__(self, design: PairDesign, weight: np.ndarray, theta: np.ndarray, l2: float = 0.0):
        self.design = design
        self.l2 = float(l2)
        self.theta = np.asarray(theta, dtype=float)
        self.signed = design.signed.tocsr()  # models x rows: sums per model
        self.rows = design.signed.T.tocsr()  # rows x models: theta_i - theta_j per row (3x a gather)
        d = self.theta[design.i] - self.theta[design.j]
        p = 1.0 / (1.0 + np.exp(-d))
        curvature = np.asarray(weight, dtype=float) * p * (1.0 - p)
        hessian = strength_hessian(design, curvature, self.l2)  # pinned as the Newton solver pins it
        with single_threaded_blas():
            factor, info = lapack.dpotrf(hessian, lower=1, clean=1)
        self.factor = factor if info == 0 and np.isfinite(factor).all() else None

    @property
    def usable(self) -> bool:
        return self.factor is not None

    def solve(self, weight: np.ndarray, score: np.ndarray, threshold: np.ndarray, *, step_tolerance: float) -> ChordBatch:
        """Rounds as columns of ``weight`` and ``score`` (pair rows x rounds), each with its gradient
        threshold; every round starts from the point estimate."""
        with single_threaded_blas():
            return self._solve(weight, score, threshold, step_tolerance)

    def _solve(self, weight, score, threshold, step_tolerance) -> ChordBatch:
        rounds = weight.shape[1]
        result = np.tile(self.theta, (rounds, 1))
        solved = np.zeros(rounds, dtype=bool)
        if not self.usable or rounds == 0:
            return ChordBatch(result, solved, 0, 0.0)
        # Columns are rounds: rows of the pair arrays are then contiguous runs of the batch.
        theta = np.ascontiguousarray(result.T)
        w = np.ascontiguousarray(weight, dtype=float)
        s = np.ascontiguousarray(score, dtype=float)
        active = np.arange(rounds)  # the rounds the columns hold
        pending = np.ones(rounds, dtype=bool)  # per column: not stopped yet
        threshold = np.asarray(threshold, dtype=float)
        previous_step = np.full(rounds, np.inf)
        iterations, worst = 0, 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(CHORD_MAX_ITER):
                d = self.rows @ theta
                np.negative(d, out=d)
                np.exp(d, out=d)
                d += 1.0
                np.divide(w, d, out=d)  # expected score of i: weight * P(i beats j)
                d -= s
                gradient = self.signed @ d  # models x columns, of the negative log-likelihood
                if self.l2 > 0:
                    gradient += self.l2 * theta
                step, info = lapack.dpotrs(self.factor, gradient, lower=1)
                if info != 0:
                    break
                iterations += int(pending.sum())
                max_gradient = np.abs(gradient).max(axis=0)
                max_step = np.abs(step).max(axis=0)
                theta -= step
                # A round's first step says nothing about rho: at least two are taken.
                seen = np.isfinite(previous_step)
                shrinking = max_step <= SHRINK_AT_LEAST * previous_step
                done = pending & seen & shrinking & (max_gradient <= threshold[active]) & (max_step <= step_tolerance / 2)
                stalled = pending & ~done & ((seen & ~shrinking) | ~np.isfinite(max_step))
                previous_step = max_step
                if done.any():
                    result[active[done]] = theta[:, done].T
                    solved[active[done]] = True
                    worst = max(worst, float((max_gradient[done] / threshold[active[done]]).max()))
                if stalled.any():
                    result[active[stalled]] = theta[:, stalled].T
                pending &= ~(done | stalled)
                if not pending.any():
                    break
                if pending.sum() * 2 <= len(pending):
                    # Most rounds of the batch have stopped: carry on with the others only (a
                    # stopped round left in the batch would cost as much as a fresh one).
                    active, theta, w, s = (active[pending], np.ascontiguousarray(theta[:, pending]),
                                           np.ascontiguousarray(w[:, pending]), np.ascontiguousarray(s[:, pending]))
                    previous_step = previous_step[pending]
                    pending = pending[pending]
        if pending.any():
            result[active[pending]] = theta[:, pending].T
        return ChordBatch(result, solved, iterations, worst)
