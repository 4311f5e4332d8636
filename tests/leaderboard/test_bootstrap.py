"""Bootstrap: seeded reproducibility, intervals around the estimate, equivalence with resampling
battles, and speed."""
from __future__ import annotations

import time

import numpy as np
import pytest

from leaderboard.engine import PairOutcomes, RatingScale, bootstrap_bradley_terry, fit_bradley_terry, rate

from .conftest import simulate_votes


def test_same_seed_same_intervals_other_seed_other_intervals(small_arena):
    first = rate(small_arena, bootstrap_rounds=200, seed=5)
    again = rate(small_arena, bootstrap_rounds=200, seed=5)
    other = rate(small_arena, bootstrap_rounds=200, seed=6)
    assert [(m.ci_lower, m.ci_upper) for m in first.models] == [(m.ci_lower, m.ci_upper) for m in again.models]
    assert [(m.ci_lower, m.ci_upper) for m in first.models] != [(m.ci_lower, m.ci_upper) for m in other.models]
    np.testing.assert_array_equal(first.bootstrap_ratings, again.bootstrap_ratings)


def test_a_drawn_seed_is_reported_and_reproduces_the_run(small_arena):
    drawn = rate(small_arena, bootstrap_rounds=50)
    seed = drawn.params["seed"]
    assert isinstance(seed, int) and drawn.bootstrap["seed"] == seed
    repeated = rate(small_arena, bootstrap_rounds=50, seed=seed)
    assert [m.ci_lower for m in drawn.models] == [m.ci_lower for m in repeated.models]


def test_intervals_contain_the_estimate_and_every_round_converged(small_arena):
    result = rate(small_arena, bootstrap_rounds=500, seed=1)
    for row in result.models:
        assert row.ci_lower < row.rating < row.ci_upper
    assert result.bootstrap["rounds"] == 500 and result.bootstrap_ratings.shape == (500, 5)
    assert result.bootstrap["max_gradient_ratio"] <= 1.0
    assert result.bootstrap["degenerate_rounds"] == 0


def test_confidence_level_widens_the_interval(small_arena):
    narrow = rate(small_arena, bootstrap_rounds=300, seed=1, confidence=0.5).model("beta")
    wide = rate(small_arena, bootstrap_rounds=300, seed=1, confidence=0.99).model("beta")
    assert wide.ci_lower < narrow.ci_lower < narrow.ci_upper < wide.ci_upper


def test_multinomial_counts_match_resampling_battles():
    votes = simulate_votes({"a": 0.6, "b": 0.2, "c": 0.0, "d": -0.5}, 2000, seed=9)
    pairs = PairOutcomes.from_rows(votes).scored()
    point = fit_bradley_terry(pairs)
    multinomial = bootstrap_bradley_terry(pairs, point, rounds=400, seed=1).theta
    rng = np.random.default_rng(2)
    explicit = []
    for _ in range(400):
        resample = [votes[k] for k in rng.integers(0, len(votes), len(votes))]
        explicit.append(fit_bradley_terry(PairOutcomes.from_rows(resample).scored()).theta)
    sd_multinomial = multinomial.std(axis=0)
    sd_explicit = np.array(explicit).std(axis=0)
    # Same distribution: standard deviations agree within Monte Carlo error (~7% at 400 rounds).
    np.testing.assert_allclose(sd_multinomial, sd_explicit, rtol=0.25)


def test_thousand_rounds_on_sixty_models_take_seconds():
    strengths = {f"m{k:02d}": s for k, s in enumerate(np.random.default_rng(0).normal(0, 0.8, 60))}
    votes = simulate_votes(strengths, 60_000, seed=1)
    pairs = PairOutcomes.from_rows(votes).scored()
    point = fit_bradley_terry(pairs)
    started = time.perf_counter()
    result = bootstrap_bradley_terry(pairs, point, rounds=1000, seed=3)
    seconds = time.perf_counter() - started
    print(f"\n1000 bootstrap rounds, 60 models, {pairs.battles} battles: {seconds:.2f} s "
          f"({1000 / seconds:.0f} rounds/s, {result.chord_iterations / 1000:.1f} chord iterations per round, "
          f"{result.newton_rounds} rounds by Newton)")
    assert seconds < 20
    assert result.max_gradient_ratio <= 1.0
    ratings = RatingScale().to_ratings(result.theta)
    assert np.isfinite(ratings).all()


def test_zero_rounds_means_no_interval(small_arena):
    result = rate(small_arena, bootstrap_rounds=0)
    assert result.bootstrap is None and result.bootstrap_ratings is None
    assert all(m.ci_lower is None and m.ci_upper is None for m in result.models)
    # Without intervals the rank falls back to the order of the point ratings.
    assert [m.rank_ub for m in result.models] == [1, 2, 3, 4, 5]


def test_rounds_that_lose_all_wins_of_a_model_are_regularised_and_counted():
    votes = simulate_votes({"a": 0.3, "b": 0.0, "c": -0.3}, 600, seed=4)
    votes += [("rare", "a", "model_a"), ("rare", "b", "model_b"), ("c", "rare", "model_a")]
    result = rate(votes, bootstrap_rounds=300, seed=0)
    assert result.solver["regularisation"] is None  # the data themselves are fine
    assert result.bootstrap["degenerate_rounds"] > 0  # but some resamples drop rare's only win
    assert np.isfinite(result.bootstrap_ratings).all()
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        rate(votes, bootstrap_rounds=-1)


def test_resamples_are_multinomial_with_exactly_the_observed_total():
    from leaderboard.engine.bootstrap import multinomial_resamples

    counts = np.array([500, 300, 150, 40, 9, 1, 0])
    total = int(counts.sum())
    draws = multinomial_resamples(np.random.default_rng(11), counts, 20_000)
    assert (draws.sum(axis=1) == total).all() and (draws >= 0).all()
    assert (draws[:, -1] == 0).all()  # a cell never observed is never drawn
    p = counts / total
    np.testing.assert_allclose(draws.mean(axis=0), counts, rtol=0.01, atol=0.05)
    # Multinomial variance N p (1 - p), not the Poisson N p: 125 against 250 for the largest cell.
    np.testing.assert_allclose(draws.var(axis=0)[:5], (total * p * (1 - p))[:5], rtol=0.05)
    cov = np.cov(draws[:, 0], draws[:, 1])[0, 1]
    assert cov == pytest.approx(-total * p[0] * p[1], rel=0.1)


def test_resample_totals_are_corrected_both_ways():
    from leaderboard.engine.bootstrap import multinomial_resamples

    counts = np.array([3, 2, 1])
    draws = multinomial_resamples(np.random.default_rng(0), counts, 2000)
    assert (draws.sum(axis=1) == 6).all()
    # Six battles in three cells: every arrangement of the six is reachable, including all in one cell.
    assert draws[:, 0].max() == 6 and draws[:, 2].min() == 0
    rng = np.random.default_rng(1)
    raw = rng.poisson(counts.astype(float), size=(2000, 3)).sum(axis=1)
    assert (raw < 6).any() and (raw > 6).any()  # both corrections are needed at this size


def test_rounds_do_not_depend_on_the_drawing_thread_and_a_shorter_run_is_a_prefix(small_arena):
    pairs = PairOutcomes.from_rows(small_arena).scored()
    point = fit_bradley_terry(pairs)
    inline = bootstrap_bradley_terry(pairs, point, rounds=100, seed=8, threads=1)
    threaded = bootstrap_bradley_terry(pairs, point, rounds=100, seed=8, threads=2)
    np.testing.assert_array_equal(inline.theta, threaded.theta)
    shorter = bootstrap_bradley_terry(pairs, point, rounds=40, seed=8, threads=2)
    np.testing.assert_array_equal(shorter.theta, inline.theta[:40])
    assert not np.array_equal(bootstrap_bradley_terry(pairs, point, rounds=40, seed=9).theta, shorter.theta)


def test_every_round_meets_the_point_estimates_criterion(small_arena):
    from leaderboard.engine import solve_pairwise_logit
    from leaderboard.engine.bootstrap import multinomial_resamples

    pairs = PairOutcomes.from_rows(small_arena).scored()
    point = fit_bradley_terry(pairs)
    result = bootstrap_bradley_terry(pairs, point, rounds=32, seed=4, chunk=32, threads=1)
    # Redo the same resamples one by one with the single-fit solver from its default start.
    cells = np.concatenate([pairs.wins_i, pairs.wins_j, pairs.ties])
    stream = np.random.SeedSequence(4).spawn(1)[0]
    draws = multinomial_resamples(np.random.default_rng(stream), cells, 32)
    n = len(pairs.i)
    for r in range(32):
        wins_i, wins_j, ties = draws[r, :n], draws[r, n : 2 * n], draws[r, 2 * n :]
        alone = solve_pairwise_logit(pairs.i, pairs.j, (wins_i + wins_j + ties).astype(float), wins_i + 0.5 * ties,
                                     pairs.n_models)
        np.testing.assert_allclose(result.theta[r], alone.theta, atol=1e-9)


def test_the_reused_graph_layout_agrees_with_a_fresh_identifiability_check():
    from leaderboard.engine.bradley_terry import ScoredGraphs, is_identifiable

    rng = np.random.default_rng(5)
    n = 12
    i, j = np.triu_indices(n, 1)
    graphs = ScoredGraphs(n, i, j)
    verdicts = []
    weights, scores = [], []
    for _ in range(300):
        weight = rng.integers(0, 3, len(i)).astype(float) * (rng.random(len(i)) < 0.3)
        score = np.minimum(weight, rng.integers(0, 3, len(i)) * 0.5)
        expected = is_identifiable(n, i, j, weight, score)
        assert graphs.identifiable(weight, score) == expected
        verdicts.append(expected)
        weights.append(weight)
        scores.append(score)
    assert set(verdicts) == {True, False}
    # All resamples at once (columns), as the bootstrap checks them, give the same verdicts.
    batched = graphs.identifiable_columns(np.array(weights).T, np.array(scores).T)
    assert batched.tolist() == verdicts


def alone_fits(pairs, result, seed: int, rounds: int, l2: float = 0.0):
    """The same resamples as a one-batch run, each solved by the single-fit solver from its default start."""
    from leaderboard.engine import solve_pairwise_logit
    from leaderboard.engine.bootstrap import multinomial_resamples

    cells = np.concatenate([pairs.wins_i, pairs.wins_j, pairs.ties])
    draws = multinomial_resamples(np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]), cells, rounds)
    n = len(pairs.i)
    for r in range(rounds):
        wins_i, wins_j, ties = draws[r, :n], draws[r, n : 2 * n], draws[r, 2 * n :]
        yield r, solve_pairwise_logit(pairs.i, pairs.j, (wins_i + wins_j + ties).astype(float), wins_i + 0.5 * ties,
                                      pairs.n_models, l2=l2).theta


def test_rounds_the_shared_hessian_cannot_settle_are_solved_by_newton():
    from dataclasses import replace

    pairs = PairOutcomes.from_rows(simulate_votes({"a": 0.9, "b": 0.3, "c": 0.0, "d": -0.6}, 4000, seed=2)).scored()
    point = fit_bradley_terry(pairs)
    # A start and Hessian far from the solution: the chord iterations stop shrinking.
    far = replace(point, theta=point.theta * 6.0)
    result = bootstrap_bradley_terry(pairs, far, rounds=16, seed=3, chunk=16, threads=1)
    assert result.newton_rounds > 0 and result.iterations > 0 and result.max_gradient_ratio <= 1.0
    for r, theta in alone_fits(pairs, result, seed=3, rounds=16):
        np.testing.assert_allclose(result.theta[r], theta, atol=1e-9)


def test_a_regularised_point_fit_is_bootstrapped_with_its_prior():
    votes = simulate_votes({"a": 0.5, "b": 0.0}, 800, seed=1) + simulate_votes({"c": 0.2, "d": -0.2}, 800, seed=2)
    pairs = PairOutcomes.from_rows(votes).scored()  # two groups never compared
    point = fit_bradley_terry(pairs)
    assert point.l2 > 0
    result = bootstrap_bradley_terry(pairs, point, rounds=24, seed=5, chunk=24, threads=1)
    assert result.newton_rounds == 0 and result.chord_iterations > 0
    for r, theta in alone_fits(pairs, result, seed=5, rounds=24, l2=point.l2):
        np.testing.assert_allclose(result.theta[r], theta, atol=1e-9)


def test_at_many_models_every_round_is_settled_by_the_shared_hessian_in_a_few_iterations():
    strengths = {f"m{k:03d}": s for k, s in enumerate(np.random.default_rng(4).normal(0, 0.8, 120))}
    pairs = PairOutcomes.from_rows(simulate_votes(strengths, 300_000, seed=6)).scored()
    point = fit_bradley_terry(pairs)
    result = bootstrap_bradley_terry(pairs, point, rounds=64, seed=2)
    info = result.info()
    assert info["newton_rounds"] == 0 and info["iterations"] == 0 and info["degenerate_rounds"] == 0
    assert 2 <= info["chord_iterations"] / 64 <= 10
    assert info["max_gradient_ratio"] <= 1.0 and info["sampler"] == "poisson-inversion"
