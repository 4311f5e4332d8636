"""Bootstrap confidence intervals for Bradley-Terry ratings.

Resampling N battles with replacement is the same as drawing the per-(pair, outcome) counts from a
multinomial with N trials and the observed proportions, so a round costs one draw over the cells
instead of touching every battle. The multinomial is drawn exactly but cheaply: independent
Poisson counts with the observed counts as means are a multinomial sample of their own random
total; the few battles by which that total misses N are then added (drawn from the observed
proportions) or removed (uniformly among the drawn battles), which leaves a multinomial sample of
exactly N. Each round is solved to the same convergence criterion as the point estimate, starting
from it (a couple of Newton steps). Rounds go in batches; a second thread draws the next batches
while the current one is fitted. Every batch has its own random stream derived from the seed, so
a seed gives the same rounds with or without that thread, and the first k rounds of a longer run
are the rounds of a k-round run.
"""
from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from leaderboard.engine.bradley_terry import (
    DEFAULT_MAX_ITER, DEFAULT_PRIOR_SD, DEFAULT_STEP_TOLERANCE, DEFAULT_TOLERANCE, LogitFit, PairDesign,
    ScoredGraphs, prior_l2, solve_pairwise_logit,
)
from leaderboard.engine.outcomes import ScoredPairs

DEFAULT_CONFIDENCE = 0.95
ROUNDS_PER_BATCH = 32
DRAWS_AHEAD = 2  # batches drawn ahead of the fits


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


def default_threads() -> int:
    """Two (one drawing, one fitting) where there is a second core, else one."""
    return 2 if (os.cpu_count() or 1) > 1 else 1


def multinomial_resamples(rng: np.random.Generator, counts: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` draws from Multinomial(counts.sum(), counts / counts.sum()), exactly (see the module)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    observed = np.flatnonzero(counts)  # a cell never observed is never drawn: no draw spent on it
    means = counts[observed].astype(float)
    cumulative = np.cumsum(counts)
    draws = np.zeros((rows, len(counts)), dtype=np.int64)
    for row in draws:  # one row after another, so that a shorter run draws a prefix of a longer one
        row[observed] = rng.poisson(means)
        drawn = int(row.sum())
        if drawn < total:
            # Each added battle is a cell drawn with the observed proportions.
            cells = np.searchsorted(cumulative, rng.integers(0, total, total - drawn), side="right")
            row += np.bincount(cells, minlength=len(counts))
        elif drawn > total:
            # Remove battles chosen uniformly without replacement among the drawn ones.
            picked = rng.choice(drawn, size=drawn - total, replace=False)
            cells = np.searchsorted(np.cumsum(row), picked, side="right")
            row -= np.bincount(cells, minlength=len(counts))
    return draws


def bootstrap_bradley_terry(
    pairs: ScoredPairs, point: LogitFit, *, rounds: int = 1000, seed: int | None = None,
    prior_sd: float = DEFAULT_PRIOR_SD, tolerance: float = DEFAULT_TOLERANCE,
    step_tolerance: float = DEFAULT_STEP_TOLERANCE, max_iter: int = DEFAULT_MAX_ITER,
    chunk: int = ROUNDS_PER_BATCH, threads: int | None = None,
) -> BootstrapResult:
    """Strengths for ``rounds`` multinomial resamples of the counted battles."""
    if rounds < 0:
        raise ValueError(f"bootstrap rounds must be >= 0; got {rounds}")
    if chunk < 1:
        raise ValueError(f"rounds per batch must be >= 1; got {chunk}")
    seed = resolve_seed(seed)
    started = time.perf_counter()
    n_pairs = len(pairs.i)
    cells = np.concatenate([pairs.wins_i, pairs.wins_j, pairs.ties]).astype(np.int64)
    starts = list(range(0, rounds, chunk))
    streams = np.random.SeedSequence(seed).spawn(len(starts))
    weak_prior = prior_l2(prior_sd)
    design = PairDesign(pairs.i, pairs.j, pairs.n_models)
    graphs = ScoredGraphs(pairs.n_models, pairs.i, pairs.j)

    def draw(index: int) -> tuple[np.ndarray, np.ndarray]:
        size = min(chunk, rounds - starts[index])
        draws = multinomial_resamples(np.random.default_rng(streams[index]), cells, size)
        wins_i, wins_j, ties = draws[:, :n_pairs], draws[:, n_pairs : 2 * n_pairs], draws[:, 2 * n_pairs :]
        return (wins_i + wins_j + ties).astype(float), wins_i + 0.5 * ties

    def fit(weight: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, int, int, float]:
        size = len(weight)
        l2 = np.full(size, point.l2)
        degenerate = 0
        if point.l2 == 0:
            # The point fit is identifiable, so a resample in which every pair still has a win or
            # tie each way is too; only the others need the graph check.
            both_ways = (score > 0).all(axis=1) & (score < weight).all(axis=1)
            for r in np.flatnonzero(~both_ways):
                if not graphs.identifiable(weight[r], score[r]):
                    l2[r] = weak_prior
                    degenerate += 1
        theta = np.empty((size, pairs.n_models))
        iterations, ratio = 0, 0.0
        for r in range(size):
            solved = solve_pairwise_logit(
                pairs.i, pairs.j, weight[r], score[r], pairs.n_models, l2=float(l2[r]), tolerance=tolerance,
                step_tolerance=step_tolerance, max_iter=max_iter, theta0=point.theta, with_log_likelihood=False,
                design=design,
            )
            theta[r] = solved.theta
            iterations += solved.iterations
            ratio = max(ratio, solved.max_gradient / solved.gradient_threshold)
        return theta, degenerate, iterations, ratio

    results = []
    if (default_threads() if threads is None else int(threads)) > 1 and len(starts) > 1:
        # The draws release the interpreter lock, the many small steps of a fit mostly do not:
        # one thread draws the next batches while this one fits.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap-draws") as pool:
            pending = [pool.submit(draw, k) for k in range(min(DRAWS_AHEAD, len(starts)))]
            for k in range(len(starts)):
                weight, score = pending[k].result()
                if k + DRAWS_AHEAD < len(starts):
                    pending.append(pool.submit(draw, k + DRAWS_AHEAD))
                pending[k] = None  # let the batch go once fitted
                results.append(fit(weight, score))
    else:
        results = [fit(*draw(k)) for k in range(len(starts))]
    samples = np.concatenate([r[0] for r in results]) if results else np.empty((0, pairs.n_models))
    return BootstrapResult(
        theta=samples, rounds=rounds, seed=seed, degenerate_rounds=sum(r[1] for r in results),
        max_gradient_ratio=max((r[3] for r in results), default=0.0), iterations=sum(r[2] for r in results),
        seconds=time.perf_counter() - started,
    )


def percentile_interval(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval over the rounds (axis 0)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}")
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return lower, upper
