"""Rating engine benchmark: the exact Bradley-Terry fit next to fits that stop early.

Prints, for the real Chatbot Arena votes and for a simulated arena of arena size (1.7 million
votes, many models, a few popular and many rarely shown), the time of each fit, how far its
ratings land from the exact maximum-likelihood ratings, and its gradient against the convergence
threshold; then bootstrap rounds per second and the streaming throughput of ``rate`` on a CSV.

Last, the goal case (1,000,000 seeded battles, 100 models): the exact fit and 1,000 bootstrap rounds
next to the common recipe (L-BFGS logistic regression over unique (model_a, model_b, outcome) rows
with counts as sample weights) and next to the ``evalica`` package when it is installed (it is not a
project dependency: ``pip install evalica==0.4.2`` into the venv to include it), best and median of
several runs, with the largest rating difference to the exact fit.

Then the bootstrap at refresh size (2,000,000 battles, 200 models): the Poisson sampler and the
batched solver each next to the plain way (numpy's sampler; one Newton fit per round) on the same
data, with the largest rating difference between the two solvers on the same resamples.

    python bench/ratings.py [--votes PATH] [--rounds 1000] [--quick] [--goal-only] [--refresh-size]
"""
from __future__ import annotations

import argparse
import csv
import statistics
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
          f"({boot.chord_iterations / rounds:.1f} chord iterations per round, {boot.newton_rounds} rounds by Newton, "
          f"worst |grad| / threshold {boot.max_gradient_ratio:.1e})")


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
        for rounds in (0, ARGS.rounds):
            command = [sys.executable, str(REPO_ROOT / "manage.py"), "rate", "--battles", str(path), "--json",
                       "--bootstrap", str(rounds), "--seed", "1"]
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", MEASURE_CHILD, str(report), *command], cwd=REPO_ROOT, check=True)
            seconds = time.perf_counter() - started
            returncode, peak_kb = (int(value) for value in report.read_text().split())
            print(f"manage.py rate, {rows:,}-row CSV ({path.stat().st_size / 1e6:.0f} MB), {rounds} bootstrap rounds: "
                  f"{seconds:.2f} s (exit {returncode}), peak RSS {peak_kb / 1024:.0f} MB")


# --------------------------------------------------------------------------------------------------
# The goal case: 1M battles, 100 models, against the common recipe and evalica

GOAL_FIT_SECONDS = 0.3
GOAL_BOOTSTRAP_SECONDS = 1.5  # for 1,000 rounds
GOAL_FULL = {"battles": 1_000_000, "models": 100, "repeat": 5}
GOAL_QUICK = {"battles": 50_000, "models": 20, "repeat": 2}
OUTCOMES = ("model_a", "model_b", "tie", "tie (bothbad)")


def runs(function, repeat: int):
    """Wall times of ``repeat`` runs (single-threaded BLAS, as in ``timed``) and the last result."""
    seconds, result = [], None
    with single_threaded_blas():
        for _ in range(repeat):
            started = time.perf_counter()
            result = function()
            seconds.append(time.perf_counter() - started)
    return seconds, result


def synthetic_battles(battles: int, models: int, seed: int):
    """Battles one by one: side A, side B (model indices) and the outcome (index into OUTCOMES).

    Strengths are normal (sd 0.8 natural units, about 140 points); popularity varies threefold
    between models; 30% of the votes are ties, a third of those "both bad".
    """
    rng = np.random.default_rng(seed)
    strength = rng.normal(0.0, 0.8, models)
    exposure = rng.uniform(1.0, 3.0, models)
    exposure /= exposure.sum()
    a = rng.choice(models, battles, p=exposure)
    b = rng.choice(models - 1, battles, p=None)
    b = b + (b >= a)  # a uniformly chosen opponent other than a
    tie = rng.random(battles) < 0.3
    bothbad = tie & (rng.random(battles) < 1 / 3)
    a_wins = rng.random(battles) < expit(strength[a] - strength[b])
    outcome = np.where(tie, np.where(bothbad, 3, 2), np.where(a_wins, 0, 1)).astype(np.int64)
    return a.astype(np.int64), b.astype(np.int64), outcome


def count_cells(a, b, outcome, models: int) -> np.ndarray:
    """Battles per (model_a, model_b, outcome) cell, as a flat array of models * models * 4."""
    return np.bincount((a * models + b) * 4 + outcome, minlength=models * models * 4)


def pair_outcomes(cells: np.ndarray, models: int) -> PairOutcomes:
    table = cells.reshape(models * models, 4)
    present = np.flatnonzero(table.sum(axis=1))
    table = table[present].astype(np.int64)
    names = tuple(f"model-{k:03d}" for k in range(models))
    return PairOutcomes(names=names, first=present // models, second=present % models, wins_first=table[:, 0],
                        wins_second=table[:, 1], ties=table[:, 2], bothbad=table[:, 3])


def unique_rows(cells: np.ndarray, models: int):
    """The common recipe's design: one row per (model_a, model_b, outcome) seen, weighted by its count.

    A decisive row has target 1 (A won) or 0 (B won); a tie row enters twice, once with each
    target and half the weight, which is "a tie is half a win" for a logistic regression.
    """
    present = np.flatnonzero(cells)
    count = cells[present].astype(float)
    pair, outcome = present // 4, present % 4
    first, second = pair // models, pair % models
    tie = outcome >= 2
    rows_a = np.concatenate([first, first[tie]])
    rows_b = np.concatenate([second, second[tie]])
    target = np.concatenate([np.where(outcome == 0, 1.0, np.where(outcome == 1, 0.0, 1.0)), np.zeros(tie.sum())])
    weight = np.concatenate([np.where(tie, 0.5 * count, count), 0.5 * count[tie]])
    return rows_a, rows_b, target, weight


def lbfgs_unique_rows(rows_a, rows_b, target, weight, models: int, max_iter: int = 100, tol: float = 1e-6):
    """Weighted logistic regression without intercept or penalty, L-BFGS on the mean loss (sklearn's
    ``LogisticRegression(fit_intercept=False, penalty=None, tol=1e-6)``, max_iter 100, as in the
    public arena notebooks); coefficients in natural units, centred."""
    total = weight.sum()

    def loss_and_gradient(theta):
        d = theta[rows_a] - theta[rows_b]
        loss = np.dot(weight, target * np.logaddexp(0, -d) + (1 - target) * np.logaddexp(0, d)) / total
        residual = weight * (expit(d) - target) / total
        return loss, np.bincount(rows_a, residual, models) - np.bincount(rows_b, residual, models)

    result = minimize(loss_and_gradient, np.zeros(models), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": tol})
    return result.x - result.x.mean()


def lbfgs_bootstrap_round(rng, a, b, outcome, models: int) -> np.ndarray:
    """One round of the common recipe's bootstrap: resample the battles, regroup, refit."""
    pick = rng.integers(0, len(a), len(a))
    return lbfgs_unique_rows(*unique_rows(count_cells(a[pick], b[pick], outcome[pick], models), models), models)


def load_evalica():
    try:
        import evalica
    except Exception as error:  # noqa: BLE001 - any import failure means "leave it out"
        return None, f"{type(error).__name__}: {error}"
    return evalica, getattr(evalica, "__version__", "?")


def evalica_theta(result, names) -> np.ndarray:
    """evalica's Bradley-Terry scores are strengths p (P(i beats j) = p_i / (p_i + p_j)), geometric
    mean 1: log p is on our natural scale."""
    theta = np.log(result.scores.reindex(list(names)).to_numpy(dtype=float))
    return theta - theta.mean()


def goal_case(battles: int, models: int, rounds: int, repeat: int, seed: int = 20240601) -> None:
    a, b, outcome = synthetic_battles(battles, models, seed)
    print(f"\ngoal case: {battles:,} synthetic battles (seed {seed}), {models} models, "
          f"{rounds:,} bootstrap rounds; best and median of {repeat} runs")
    count_times, cells = runs(lambda: count_cells(a, b, outcome, models), repeat)
    outcomes = pair_outcomes(cells, models)
    pairs = outcomes.scored()
    names = outcomes.names

    fit_times, exact = runs(lambda: fit_bradley_terry(pairs), repeat)
    exact_ratings = SCALE.to_ratings(exact.theta)
    boot_repeat = max(1, min(repeat, 3))
    boot_times, boot = runs(lambda: bootstrap_bradley_terry(pairs, exact, rounds=rounds, seed=1), boot_repeat)
    # The goal is stated for 1,000 rounds; a --quick run scales its figure to that.
    per_thousand = 1000 / rounds

    rows = []  # (method, seconds of each run, max |diff| to the exact fit or None, goal, note)
    rows.append(("count battles into (pair, outcome) cells (numpy)", count_times, None, "",
                 f"{len(pairs.i):,} pairs"))
    rows.append(("exact Newton fit on the cells (ours)", fit_times, 0.0, f"<= {GOAL_FIT_SECONDS} s",
                 f"{exact.iterations} steps, |grad|/threshold {exact.max_gradient / exact.gradient_threshold:.1e}"))
    rows.append((f"bootstrap, {rounds:,} rounds (ours)", boot_times, None,
                 f"<= {GOAL_BOOTSTRAP_SECONDS} s" + ("" if rounds == 1000 else " /1000"),
                 f"{boot.chord_iterations / rounds:.1f} chord iterations per round, "
                 f"{boot.newton_rounds} rounds by Newton"))

    design_times, design = runs(lambda: unique_rows(cells, models), repeat)
    lbfgs_times, lbfgs_theta = runs(lambda: lbfgs_unique_rows(*design, models), repeat)
    lbfgs_diff = np.abs(SCALE.to_ratings(lbfgs_theta) - exact_ratings).max()
    rows.append(("L-BFGS on unique rows, sample weights (common recipe)", lbfgs_times, lbfgs_diff, "",
                 f"{len(design[0]):,} rows (+{np.median(design_times) * 1e3:.0f} ms to build them)"))
    rng = np.random.default_rng(1)
    sample_rounds = max(2, min(5, rounds))
    round_times, _ = runs(lambda: lbfgs_bootstrap_round(rng, a, b, outcome, models), sample_rounds)
    rows.append(("  its bootstrap: resample battles, regroup, refit", [t * rounds for t in round_times], None,
                 "", f"{rounds:,} x the time of one round ({sample_rounds} rounds timed)"))

    evalica, version = load_evalica()
    if evalica is None:
        print(f"evalica is not available ({version}); its rows are left out "
              "(install it into the venv with: pip install evalica==0.4.2)")
    else:
        label = np.array(names, dtype=object)
        xs, ys = label[a].tolist(), label[b].tolist()
        winner_code = np.array([int(evalica.Winner.X), int(evalica.Winner.Y), int(evalica.Winner.Draw),
                                int(evalica.Winner.Draw)])
        winners = winner_code[outcome].tolist()
        try:
            ev_times, ev = runs(lambda: evalica.bradley_terry(xs, ys, winners), repeat)
            ev_diff = np.abs(SCALE.to_ratings(evalica_theta(ev, names)) - exact_ratings).max()
            rows.append((f"evalica {version} bradley_terry, one row per battle", ev_times, ev_diff, "",
                         f"{ev.iterations} iterations (limit {ev.limit}, tolerance {ev.tolerance:g})"))
            present = np.flatnonzero(cells)
            pair, cell_outcome = present // 4, present % 4
            cx, cy = label[pair // models].tolist(), label[pair % models].tolist()
            cw, weights = winner_code[cell_outcome].tolist(), cells[present].astype(float).tolist()
            evw_times, evw = runs(lambda: evalica.bradley_terry(cx, cy, cw, weights=weights), repeat)
            evw_diff = np.abs(SCALE.to_ratings(evalica_theta(evw, names)) - exact_ratings).max()
            rows.append((f"evalica {version} bradley_terry, unique rows + weights", evw_times, evw_diff, "",
                         f"{evw.iterations} iterations"))
            evt_times, evt = runs(lambda: evalica.bradley_terry(cx, cy, cw, weights=weights, tolerance=1e-12,
                                                                 limit=100_000), repeat)
            evt_diff = np.abs(SCALE.to_ratings(evalica_theta(evt, names)) - exact_ratings).max()
            rows.append(("  the same, tolerance 1e-12, limit 100,000", evt_times, evt_diff, "",
                         f"{evt.iterations} iterations"))
            boot_sample = 3 if rounds >= 3 else rounds
            evb_times, _ = runs(lambda: evalica.bootstrap(evalica.bradley_terry, xs, ys, winners,
                                                          n_resamples=boot_sample, bootstrap_method="percentile",
                                                          random_state=1), 1)
            rows.append(("  its bootstrap (evalica.bootstrap, percentile)", [evb_times[0] * rounds / boot_sample],
                         None, "", f"{rounds:,}/{boot_sample} x one call with {boot_sample} resamples"))
        except Exception as error:  # noqa: BLE001 - a failing peer must not stop the bench
            print(f"evalica failed: {type(error).__name__}: {error}")

    print(f"{'method':<56} {'best (s)':>9} {'median (s)':>11} {'max |diff| (points)':>20} {'goal':>10}  note")
    for label_text, seconds, diff, goal, note in rows:
        diff_text = "-" if diff is None else f"{diff:.2e}"
        estimated = label_text.startswith("  its bootstrap")
        best = f"~{min(seconds):.1f}" if estimated else f"{min(seconds):.3f}"
        median = f"~{statistics.median(seconds):.1f}" if estimated else f"{statistics.median(seconds):.3f}"
        print(f"{label_text:<56} {best:>9} {median:>11} {diff_text:>20} {goal:>10}  {note}")
    fit_best, boot_best = min(fit_times), min(boot_times) * per_thousand
    print(f"goal: exact fit {fit_best:.3f} s (best; goal <= {GOAL_FIT_SECONDS} s: "
          f"{'met' if fit_best <= GOAL_FIT_SECONDS else 'MISSED'}); 1,000 bootstrap rounds {boot_best:.2f} s "
          f"(best{', scaled from ' + format(rounds, ',') + ' rounds' if rounds != 1000 else ''}; goal <= "
          f"{GOAL_BOOTSTRAP_SECONDS} s: {'met' if boot_best <= GOAL_BOOTSTRAP_SECONDS else 'MISSED'})")


# --------------------------------------------------------------------------------------------------
# The bootstrap at refresh size (2M battles, 200 models), against one Newton fit per round

REFRESH_FULL = {"battles": 2_000_000, "models": 200}
REFRESH_QUICK = {"battles": 50_000, "models": 20}


def refresh_size_bootstrap(battles: int, models: int, rounds: int, seed: int = 7) -> None:
    """Our sampler and our batched solver, each next to the plain way of doing its part on the same
    data in the same run: numpy's Poisson sampler for the cells, and one Newton fit per round (the
    point estimate's solver and criterion, from the point estimate) on the same resamples."""
    from leaderboard.engine import solve_pairwise_logit
    from leaderboard.engine.bootstrap import MultinomialResampler
    from leaderboard.engine.bradley_terry import PairDesign
    from leaderboard.engine.resample_fit import ChordSolver

    a, b, outcome = synthetic_battles(battles, models, seed)
    pairs = pair_outcomes(count_cells(a, b, outcome, models), models).scored()
    point = fit_bradley_terry(pairs)
    print(f"\nbootstrap at refresh size: {battles:,} synthetic battles (seed {seed}), {models} models, "
          f"{len(pairs.i):,} pairs")
    cells = np.concatenate([pairs.wins_i, pairs.wins_j, pairs.ties]).astype(np.int64)
    resampler = MultinomialResampler(cells)
    observed = cells[resampler.observed].astype(float)
    sample = 64
    rng = np.random.default_rng(1)
    ours_draw, draws = runs(lambda: resampler.poisson.draw(rng), 3 * sample)
    numpy_draw, _ = runs(lambda: rng.poisson(observed), sample)
    print(f"Poisson counts of {len(observed):,} cells, per round: table inversion (ours) "
          f"{statistics.median(ours_draw) * 1e3:.2f} ms, numpy Generator.poisson {statistics.median(numpy_draw) * 1e3:.2f} ms "
          f"(median of {3 * sample} / {sample})")

    drawn = resampler.draw(np.random.default_rng(2), sample)
    n = len(pairs.i)
    weight = (drawn[:, :n] + drawn[:, n : 2 * n] + drawn[:, 2 * n :]).astype(float)
    score = drawn[:, :n] + 0.5 * drawn[:, 2 * n :]
    design = PairDesign(pairs.i, pairs.j, pairs.n_models)
    chord = ChordSolver(design, pairs.battles_per_pair, point.theta, point.l2)
    threshold = 1e-6 * weight.sum(axis=1)
    chord_times, batch = runs(lambda: [chord.solve(np.ascontiguousarray(weight[k:k + 32].T),
                                                   np.ascontiguousarray(score[k:k + 32].T), threshold[k:k + 32],
                                                   step_tolerance=1e-8) for k in (0, 32)], 3)
    newton_times, newton = runs(lambda: [solve_pairwise_logit(pairs.i, pairs.j, weight[r], score[r], pairs.n_models,
                                                              theta0=point.theta, with_log_likelihood=False,
                                                              design=design) for r in range(sample)], 3)
    together = np.concatenate([part.theta for part in batch])
    difference = np.abs(SCALE.to_ratings(together) - SCALE.to_ratings(np.array([fit.theta for fit in newton]))).max()
    steps = sum(fit.iterations for fit in newton) / sample
    iterations = sum(part.iterations for part in batch) / sample
    print(f"fitting the same {sample} resamples, per round: chord iterations on the shared Hessian (ours) "
          f"{min(chord_times) / sample * 1e3:.2f} ms ({iterations:.1f} iterations), one Newton fit each "
          f"{min(newton_times) / sample * 1e3:.2f} ms ({steps:.1f} steps); largest rating difference {difference:.1e} points")

    times, boot = runs(lambda: bootstrap_bradley_terry(pairs, point, rounds=rounds, seed=1), 2)
    baseline = min(numpy_draw) + min(newton_times) / sample  # per round, drawn and fitted one after the other
    print(f"bootstrap, {rounds:,} rounds (ours, drawing thread + batched fits): best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s; {boot.chord_iterations / rounds:.1f} chord iterations and "
          f"{boot.newton_rounds} Newton rounds; the per-round way (numpy Poisson + Newton) would take "
          f"~{baseline * rounds:.2f} s on one thread")


def main() -> None:
    if ARGS.refresh_size:
        refresh_size_bootstrap(**REFRESH_QUICK if ARGS.quick else REFRESH_FULL, rounds=ARGS.rounds)
        return
    if ARGS.goal_only:
        goal_case(**GOAL_QUICK if ARGS.quick else GOAL_FULL, rounds=ARGS.rounds)
        return
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
    compare_fits("simulated arena-size data", simulated_arena(**({"battles": 100_000, "models": 40} if ARGS.quick else {})))
    print()
    streaming_throughput(100_000 if ARGS.quick else 1_700_000)
    goal_case(**GOAL_QUICK if ARGS.quick else GOAL_FULL, rounds=ARGS.rounds)
    refresh_size_bootstrap(**REFRESH_QUICK if ARGS.quick else REFRESH_FULL, rounds=ARGS.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=Path, default=REAL_VOTES)
    parser.add_argument("--rounds", type=int, default=None, help="bootstrap rounds (1000; 50 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small data and few rounds: a smoke run")
    parser.add_argument("--goal-only", action="store_true", help="only the 1M-battle goal case")
    parser.add_argument("--refresh-size", action="store_true", help="only the bootstrap at refresh size (2M, 200 models)")
    ARGS = parser.parse_args()
    if ARGS.rounds is None:
        ARGS.rounds = 50 if ARGS.quick else 1000
    main()
