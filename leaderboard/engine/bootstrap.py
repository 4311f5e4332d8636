"""Bootstrap confidence intervals for Bradley-Terry ratings.

Resampling N battles with replacement is the same as drawing the per-(pair, outcome) counts from a
multinomial with N trials and the observed proportions, so a round costs one draw over the cells
instead of touching every battle. The multinomial is drawn exactly but cheaply: independent
Poisson counts with the observed counts as means (drawn by table inversion, see ``poisson``) are a
multinomial sample of their own random total; the few battles by which that total misses N are
then added (drawn from the observed proportions) or removed (uniformly among the drawn battles),
which leaves a multinomial sample of exactly N. Each round is solved to the same convergence
criterion as the point estimate, starting from it: the rounds of a batch together by chord
iterations on the point estimate's Hessian (see ``resample_fit``), any round those do not settle
by Newton's method. Rounds go in batches; a second thread draws the next batches while the
current one is fitted. Every batch has its own random stream derived from the seed, so a seed
gives the same rounds with or without that thread, and the first k rounds of a longer run are the
rounds of a k-round run.
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
from leaderboard.engine.poisson import PoissonCells
from leaderboard.engine.resample_fit import ChordSolver

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
    iterations: int  # Newton steps over the rounds solved by Newton's method
    seconds: float
    chord_iterations: int = 0  # chord iterations over the rounds solved together
    newton_rounds: int = 0  # rounds solved one by one by Newton's method

    def info(self) -> dict:
        return {
            "rounds": self.rounds, "seed": self.seed, "degenerate_rounds": self.degenerate_rounds,
            "max_gradient_ratio": self.max_gradient_ratio, "iterations": self.iterations,
            "chord_iterations": self.chord_iterations, "newton_rounds": self.newton_rounds,
            "sampler": "poisson-inversion", "seconds": round(self.seconds, 3),
        }


def resolve_seed(seed: int | None) -> int:
    # A drawn seed is reported so that any run can be repeated exactly.
    return secrets.randbits(32) if seed is None else int(seed)


def default_threads() -> int:
    """Two (one drawing, one fitting) where there is a second core, else one."""
    return 2 if (os.cpu_count() or 1) > 1 else 1


class MultinomialResampler:
    """Rows drawn from Multinomial(counts.sum(), counts / counts.sum()), exactly (see the module)."""

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, dtype=np.int64)
        self.width = len(counts)
        self.total = int(counts.sum())
        self.observed = np.flatnonzero(counts)  # a cell never observed is never drawn: no draw spent on it
        self.cumulative = np.cumsum(counts[self.observed])
        self.poisson = PoissonCells(counts[self.observed])

    def draw(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` resamples, rows x cells (a transposed view of ``draw_columns``)."""
        return self.draw_columns(rng, rows).T

    def draw_columns(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` resamples as the columns of a C-ordered cells x rows array."""
        total = self.total
        drawn_rows = np.empty((rows, len(self.observed)), dtype=np.int64)  # observed cells only
        for row in drawn_rows:  # one row after another, so that a shorter run draws a prefix of a longer one
            self.poisson.draw(rng, out=row)
            drawn = int(row.sum())
            if drawn < total:
                # Each added battle is a cell drawn with the observed proportions.
                np.add.at(row, np.searchsorted(self.cumulative, rng.integers(0, total, total - drawn), side="right"), 1)
            elif drawn > total:
                # Remove battles chosen uniformly without replacement among the drawn ones.
                picked = rng.choice(drawn, size=drawn - total, replace=False)
                np.subtract.at(row, np.searchsorted(np.cumsum(row), picked, side="right"), 1)
        columns = np.zeros((self.width, rows), dtype=np.int64)
        columns[self.observed] = drawn_rows.T  # whole rows of the result: a fast scatter
        return columns


def multinomial_resamples(rng: np.random.Generator, counts: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` draws from Multinomial(counts.sum(), counts / counts.sum()), exactly (see the module)."""
    return MultinomialResampler(counts).draw(rng, rows)


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
    resampler = MultinomialResampler(cells) if rounds else None
    chord = ChordSolver(design, pairs.battles_per_pair, point.theta, point.l2) if rounds else None

    def draw(index: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch's battles and scores per pair row, one column per round (the fit's layout)."""
        size = min(chunk, rounds - starts[index])
        draws = resampler.draw_columns(np.random.default_rng(streams[index]), size)
        wins_i, wins_j, ties = draws[:n_pairs], draws[n_pairs : 2 * n_pairs], draws[2 * n_pairs :]
        weight = np.empty((n_pairs, size))
        np.add(wins_i, wins_j, out=weight)
        weight += ties
        score = np.multiply(ties, 0.5, out=np.empty((n_pairs, size)))
        score += wins_i
        return weight, score

    def fit(weight: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, int, int, float, int, int]:
        size = weight.shape[1]
        l2 = np.full(size, point.l2)
        degenerate = 0
        if point.l2 == 0:
            # The point fit is identifiable, so a resample in which every pair still has a win or
            # tie each way is too; only the others need the graph check (all of them at once).
            both_ways = (score > 0).all(axis=0) & (score < weight).all(axis=0)
            unsure = np.flatnonzero(~both_ways)
            if len(unsure):
                lost = unsure[~graphs.identifiable_columns(weight[:, unsure], score[:, unsure])]
                l2[lost] = weak_prior
                degenerate = len(lost)
        thresholds = tolerance * np.maximum(weight.sum(axis=0), 1.0)
        together = np.flatnonzero(l2 == point.l2)
        if len(together) == size:
            batch = chord.solve(weight, score, thresholds, step_tolerance=step_tolerance)
        else:
            batch = chord.solve(weight[:, together], score[:, together], thresholds[together],
                                step_tolerance=step_tolerance)
        theta = np.empty((size, pairs.n_models))
        theta[together] = batch.theta
        solved = np.zeros(size, dtype=bool)
        solved[together] = batch.solved
        iterations, ratio = 0, batch.max_gradient_ratio
        alone = np.flatnonzero(~solved)
        for r in alone:
            solved_alone = solve_pairwise_logit(
                pairs.i, pairs.j, weight[:, r], score[:, r], pairs.n_models, l2=float(l2[r]), tolerance=tolerance,
                step_tolerance=step_tolerance, max_iter=max_iter, theta0=point.theta, with_log_likelihood=False,
                design=design,
            )
            theta[r] = solved_alone.theta
            iterations += solved_alone.iterations
            ratio = max(ratio, solved_alone.max_gradient / solved_alone.gradient_threshold)
        return theta, degenerate, iterations, ratio, batch.iterations, len(alone)

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
        seconds=time.perf_counter() - started, chord_iterations=sum(r[4] for r in results),
        newton_rounds=sum(r[5] for r in results),
    )


def percentile_interval(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval over the rounds (axis 0)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}")
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return lower, upper
