"""Rating engine benchmark: the exact Bradley-Terry fit next to fits that stop early.

Prints, for the real Chatbot Arena votes and for a simulated arena of arena size (1.7 million
votes, many models, a few popular and many rarely shown), the time of each fit, how far its
ratings land from the exact maximum-likelihood ratings, and its gradient against the convergence
threshold; then bootstrap rounds per second and the streaming throughput of ``rate`` on a CSV.

    python bench/ratings.py [--votes PATH] [--rounds 1000]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from leaderboard.engine import PairOutcomes, RatingScale, bootstrap_bradley_terry, fit_bradley_terry, rate  # noqa: E402
from leaderboard.engine.blas import single_threaded_blas  # noqa: E402
from leaderboard.engine.bradley_terry import gradient  # noqa: E402
from leaderboard.engine.naive import capped_lbfgs_fit, fixed_mm_fit  # noqa: E402
from leaderboard.engine.outcomes import ScoredPairs, TiePolicy  # noqa: E402

REAL_VOTES = REPO_ROOT.parent / "shared" / "data" / "arena33k_en_singleturn.csv"
SCALE = RatingScale()


def timed(function, repeat: int = 5):
    """Best wall time of ``repeat`` runs (seconds) and the last result.

    Every fit runs with single-threaded BLAS, as the engine's own solver does, so that the
    comparison is not about OpenBLAS thread start-up on small problems.
    """
    best, result = float("inf"), None
    with single_threaded_blas():
        for _ in range(repeat):
            started = time.perf_counter()
            result = function()
            best = min(best, time.perf_counter() - started)
    return best, result


def per_battle_lbfgs(votes, names, max_iter):
    """Logistic regression on one row per battle (no aggregation), L-BFGS with an iteration cap."""
    index = {name: k for k, name in enumerate(names)}
    policy = TiePolicy()
    i = np.array([index[a] for a, _, _ in votes])
    j = np.array([index[b] for _, b, _ in votes])
    y = np.array([policy.score_of_a(w) for _, _, w in votes])
    n = len(names)

    def loss(theta):
        d = theta[i] - theta[j]
        residual = (expit(d) - y) / len(y)
        return (np.mean(y * np.logaddexp(0, -d) + (1 - y) * np.logaddexp(0, d)),
                np.bincount(i, residual, n) - np.bincount(j, residual, n))

    result = minimize(loss, np.zeros(n), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    return result.x - result.x.mean()


def compare_fits(title: str, pairs: ScoredPairs, extra: dict | None = None) -> None:
    threshold = 1e-6 * pairs.battles
    exact_time, exact = timed(lambda: fit_bradley_terry(pairs))
    exact_ratings = SCALE.to_ratings(exact.theta)
    votes = pairs.votes()
    print(f"\n{title}: {pairs.battles:,} battles, {pairs.n_models} models, {len(pairs.i):,} pairs met, "
          f"votes per model {votes.min():,} to {votes.max():,}")
    print(f"{'fit':<46} {'time (ms)':>10} {'max |diff| (points)':>20} {'worst model':>16} {'|grad| / threshold':>19}")
    print(f"{'exact Newton (' + str(exact.iterations) + ' steps, to the criterion)':<46} {exact_time * 1e3:>10.1f} "
          f"{0.0:>20.2e} {'-':>16} {exact.max_gradient / threshold:>19.1e}")
    fits = {
        "L-BFGS, sklearn-style tol 1e-6, cap 100": lambda: capped_lbfgs_fit(pairs, max_iter=100).theta,
        "L-BFGS, sklearn-style tol 1e-6, cap 1000": lambda: capped_lbfgs_fit(pairs, max_iter=1000).theta,
        "L-BFGS, cap 10": lambda: capped_lbfgs_fit(pairs, max_iter=10).theta,
        "MM (Zermelo), 10 iterations": lambda: fixed_mm_fit(pairs, 10).theta,
        "MM (Zermelo), 100 iterations": lambda: fixed_mm_fit(pairs, 100).theta,
        **(extra or {}),
    }
    for label, fit in fits.items():
        seconds, theta = timed(fit, repeat=3)
        difference = np.abs(SCALE.to_ratings(theta) - exact_ratings)
        worst = int(difference.argmax())
        ratio = np.abs(gradient(theta, pairs)).max() / threshold
        print(f"{label:<46} {seconds * 1e3:>10.1f} {difference.max():>20.2e} {votes[worst]:>10,} votes {ratio:>19.1e}")
    rounds = ARGS.rounds
    boot = bootstrap_bradley_terry(pairs, exact, rounds=rounds, seed=1)
    print(f"bootstrap: {rounds} rounds in {boot.seconds:.2f} s = {rounds / boot.seconds:,.0f} rounds/s "
          f"({boot.iterations / rounds:.1f} Newton steps per round, worst |grad| / threshold {boot.max_gradient_ratio:.1e})")


def simulated_arena(battles: int = 1_700_000, models: int = 150, seed: int = 0) -> ScoredPairs:
    """Heavy-tailed exposure on both sides: a few models get most votes, many get only a few hundred."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 0.8, models)
    exposure = rng.pareto(1.0, models) + 0.05
    exposure /= exposure.sum()
    a = rng.choice(models, 2 * battles, p=exposure)
    b = rng.choice(models, 2 * battles, p=exposure)
    different = np.flatnonzero(a != b)[:battles]
    a, b = a[different], b[different]
    tie = rng.random(len(a)) < 0.3
    a_wins = ~tie & (rng.random(len(a)) < expit(strength[a] - strength[b]))
    low, high = np.minimum(a, b), np.maximum(a, b)
    low_wins = np.where(a == low, a_wins, ~tie & ~a_wins)
    keys, inverse = np.unique(low * models + high, return_inverse=True)
    wins_low = np.bincount(inverse, low_wins, len(keys)).astype(np.int64)
    ties = np.bincount(inverse, tie, len(keys)).astype(np.int64)
    total = np.bincount(inverse, minlength=len(keys)).astype(np.int64)
    names = tuple(f"model-{k:03d}" for k in range(models))
    return ScoredPairs(names, keys // models, keys % models, wins_low, total - wins_low - ties, ties, TiePolicy())


MEASURE_CHILD = """
import resource, subprocess, sys
returncode = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)
with open(sys.argv[1], "w") as report:
    report.write(f"{returncode} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""


def streaming_throughput(rows: int = 1_700_000) -> None:
    """``manage.py rate`` on a CSV of arena size, in a fresh process so that its peak RSS is its own."""
    rng = np.random.default_rng(3)
    names = [f"model-{k:03d}" for k in range(60)]
    a = rng.integers(0, 60, rows)
    b = (a + rng.integers(1, 60, rows)) % 60
    outcome = rng.integers(0, 4, rows)
    winners = ["model_a", "model_b", "tie", "tie (bothbad)"]
    table = np.array([f"{x},{y},{w}" for x in names for y in names for w in winners], dtype=object)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "battles.csv"
        path.write_text("model_a,model_b,winner\n" + "\n".join(table[(a * 60 + b) * 4 + outcome]) + "\n")
        report = Path(tmp) / "usage.txt"
        for rounds in (0, 1000):
            command = [sys.executable, str(REPO_ROOT / "manage.py"), "rate", "--battles", str(path), "--json",
                       "--bootstrap", str(rounds), "--seed", "1"]
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", MEASURE_CHILD, str(report), *command], cwd=REPO_ROOT, check=True)
            seconds = time.perf_counter() - started
            returncode, peak_kb = (int(value) for value in report.read_text().split())
            print(f"manage.py rate, {rows:,}-row CSV ({path.stat().st_size / 1e6:.0f} MB), {rounds} bootstrap rounds: "
                  f"{seconds:.2f} s (exit {returncode}), peak RSS {peak_kb / 1024:.0f} MB")


def main() -> None:
    if not ARGS.votes.is_file():
        sys.exit(f"real votes file missing: {ARGS.votes}")
    with open(ARGS.votes, newline="") as handle:
        votes = [(row["model_a"], row["model_b"], row["winner"]) for row in csv.DictReader(handle)]
    outcomes = PairOutcomes.from_rows(votes)
    pairs = outcomes.scored()
    compare_fits(
        f"real votes ({ARGS.votes.name})", pairs,
        {"per-battle L-BFGS (no aggregation), cap 100": lambda: per_battle_lbfgs(votes, outcomes.names, 100)},
    )
    started = time.perf_counter()
    result = rate(votes, bootstrap_rounds=ARGS.rounds, seed=1)
    print(f"rate() end to end (count, Elo, fit, {ARGS.rounds} rounds, matrices): {time.perf_counter() - started:.2f} s")
    print(f"\n{'rank':>4}  {'model':<22} {'rating':>8}  {'95% CI':>20}  {'votes':>6}")
    for row in result.models[:10]:
        print(f"{row.rank_ub:>4}  {row.model:<22} {row.rating:8.1f}  "
              f"[{row.ci_lower:7.1f}, {row.ci_upper:7.1f}]  {row.votes:>6,}")
    compare_fits("simulated arena-size data", simulated_arena())
    print()
    streaming_throughput()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=Path, default=REAL_VOTES)
    parser.add_argument("--rounds", type=int, default=1000)
    ARGS = parser.parse_args()
    main()
