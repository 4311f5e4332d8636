"""Poisson counts by table inversion: the same counts as inverting the exact distribution, for
every bin of the guide table, and the Poisson distribution itself."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare, poisson

from leaderboard.engine.poisson import GUIDE_BITS, TABLE_MAX_MEAN, PoissonCells

MEANS = [0, 1, 2, 3, 7, 10, 33, 118, 400, TABLE_MAX_MEAN]


def exact_inversion(mean: int, u: np.ndarray) -> np.ndarray:
    """The smallest x with u < F(x), from a long table of the distribution function."""
    x = np.arange(int(mean + 20 * np.sqrt(mean) + 60))
    return np.searchsorted(poisson.cdf(x, mean), u, side="right")


@pytest.mark.parametrize("mean", MEANS)
def test_every_bin_edge_and_random_uniforms_invert_as_the_exact_distribution(mean):
    shift = 32 - GUIDE_BITS
    edges = np.arange(1 << GUIDE_BITS, dtype=np.uint64) << np.uint64(shift)
    words = np.concatenate([
        edges, edges + np.uint64((1 << shift) - 1),  # each bin's first and last word
        np.random.default_rng(mean).integers(0, 2**32, 20_000, dtype=np.uint64),
    ]).astype(np.uint32)
    cells = PoissonCells(np.full(len(words), mean))  # one word per cell
    for fraction in (0.0, 0.5, np.nextafter(1.0, 0.0)):  # the completing uniform at its extremes too
        got = cells.invert(words, lambda k: np.full(k, fraction))
        start = words.astype(float)
        u = np.minimum((start + fraction) / 2.0**32, np.nextafter((start + 1) / 2.0**32, 0))
        np.testing.assert_array_equal(got, exact_inversion(mean, u))


def test_many_cells_at_once_give_each_cell_its_own_distribution():
    rng = np.random.default_rng(3)
    means = rng.choice(np.array([1, 5, 40, 118, 2500]), 50_000)  # 2500: above the tables, numpy's sampler
    cells = PoissonCells(means)
    draws = np.stack([cells.draw(rng) for _ in range(8)])
    for mean in np.unique(means):
        sample = draws[:, means == mean].ravel()
        assert abs(sample.mean() - mean) < 5 * np.sqrt(mean / len(sample))
        assert sample.var() == pytest.approx(mean, rel=0.1)
        if mean <= 118:
            values = np.arange(int(mean + 8 * np.sqrt(mean) + 10))
            expected = poisson.pmf(values, mean) * len(sample)
            observed = np.bincount(np.minimum(sample, values[-1]), minlength=len(values))
            expected[-1] += poisson.sf(values[-1], mean) * len(sample)
            keep = expected > 5
            folded_observed = np.append(observed[keep], observed[~keep].sum())
            folded_expected = np.append(expected[keep], expected[~keep].sum())
            assert chisquare(folded_observed, folded_expected * folded_observed.sum() / folded_expected.sum()).pvalue > 1e-4


def test_the_same_generator_state_gives_the_same_counts_and_bad_means_are_refused():
    means = np.array([0, 4, 4, 90, 1500])
    first = PoissonCells(means).draw(np.random.default_rng(9))
    assert np.array_equal(first, PoissonCells(means).draw(np.random.default_rng(9)))
    assert first[0] == 0 and first.dtype == np.int64
    for bad in ([-1, 2], [1.5], [[1, 2]]):
        with pytest.raises(ValueError, match="non-negative whole numbers"):
            PoissonCells(np.array(bad))
