"""Bootstrap confidence intervals for Bradley-Terry ratings.

Resampling N battles with replacement is the same as drawing the per-(pair, outcome) counts from a
multinomial with N trials and the observed proportions, so each round costs one multinomial draw
over a few hundred cells instead of touching every battle. Each round is solved to the same
convergence criterion as the point estimate, starting from it (a couple of Newton steps).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import numpy as np

from leaderboard.engine.bradley_terry import (
    DEFAULT_MAX_ITER, DEFAULT_PRIOR_SD, DEFAULT_STEP_TOLERANCE, DEFAULT_TOLERANCE, LogitFit, is_identifiable,
    prior_l2, solve_pairwise_logit,
)
from leaderboard.engine.outcomes import ScoredPairs

DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class BootstrapResult:
    theta: np.ndarray  # rounds x models, natural units
    rounds: int
    seed: int
    degenerate_rounds: int  # resamples that needed the weak prior (some model without a win, ...)
    max_gradient_ratio: float  # worst max |gradient| / threshold over the rounds (<= 1)
    iterations: int  # Newton steps over all rounds
    seconds: float

    def info(self) -> dict:
        return {
            "rounds": self.rounds, "seed": self.seed, "degenerate_rounds": self.degenerate_rounds,
            "max_gradient_ratio": self.max_gradient_ratio, "iterations": self.iterations,
            "seconds": round(self.seconds, 3),
        }


def resolve_seed(seed: int | None) -> int:
    # A drawn seed is reported so that any run can be repeated exactly.
    return secrets.randbits(32) if seed is None else int(seed)


def bootstrap_bradley_terry(
    pairs: ScoredPairs, point: LogitFit, *, rounds: int = 1000, seed: int | None = None,
    prior_sd: float = DEFAULT_PRIOR_SD, tolerance: float = DEFAULT_TOLERANCE,
    step_tolerance: float = DEFAULT_STEP_TOLERANCE, max_iter: int = DEFAULT_MAX_ITER, chunk: int = 512,
) -> BootstrapResult:
    """Strengths for ``rounds`` multinomial resamples of the counted battles."""
    if rounds < 0:
        raise ValueError(f"bootstrap rounds must be >= 0; got {rounds}")
    seed = resolve_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    n_pairs = len(pairs.i)
    cells = np.concatenate([pairs.wins_i, pairs.wins_j, pairs.ties]).astype(float)
    total = int(cells.sum())
    probabilities = cells / total
    samples = np.empty((rounds, pairs.n_models))
    degenerate_rounds = 0
    iterations = 0
    worst_ratio = 0.0
    done = 0
    while done < rounds:
        size = min(chunk, rounds - done)
        draws = rng.multinomial(total, probabilities, size=size)
        for draw in draws:
            wins_i, wins_j, ties = draw[:n_pairs], draw[n_pairs : 2 * n_pairs], draw[2 * n_pairs :]
            weight = (wins_i + wins_j + ties).astype(float)
            score = wins_i + 0.5 * ties
            l2 = point.l2
            # The point fit is identifiable (l2 == 0), so a resample in which every pair still has a
            # win or tie each way is too; only the others need the graph check.
            if l2 == 0 and not (scored_both_ways(weight, score)
                                or is_identifiable(pairs.n_models, pairs.i, pairs.j, weight, score)):
                l2 = prior_l2(prior_sd)
                degenerate_rounds += 1
            fit = solve_pairwise_logit(
                pairs.i, pairs.j, weight, score, pairs.n_models, l2=l2, tolerance=tolerance,
                step_tolerance=step_tolerance, max_iter=max_iter, theta0=point.theta,
            )
            samples[done] = fit.theta
            iterations += fit.iterations
            worst_ratio = max(worst_ratio, fit.max_gradient / fit.gradient_threshold)
            done += 1
    return BootstrapResult(
        theta=samples, rounds=rounds, seed=seed, degenerate_rounds=degenerate_rounds,
        max_gradient_ratio=worst_ratio, iterations=iterations, seconds=time.perf_counter() - started,
    )


def scored_both_ways(weight: np.ndarray, score: np.ndarray) -> bool:
    """Every row has some score for each side (0 < score < weight)."""
    return bool((score > 0).all() and (score < weight).all())


def percentile_interval(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval over the rounds (axis 0)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}")
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return lower, upper
