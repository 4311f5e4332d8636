"""Poisson counts for many cells with integer means, drawn by inversion through a guide table.

The bootstrap draws one Poisson count per observed (pair, outcome) cell per round, tens of thousands
a round, and the means are the observed counts: whole numbers, most of them small and many equal.
For each distinct mean ``k`` the cumulative distribution ``F_k(0), F_k(1), ...`` is tabulated until
it is 1.0 in floating point, and a draw is the smallest ``x`` with ``u < F_k(x)`` for a uniform
``u`` in [0, 1): exact inversion, to the resolution of a double. A guide table splits [0, 1) into
``GUIDE_BINS`` equal bins; a draw takes 32 random bits, whose top ten pick the bin. Where no step
of ``F_k`` falls inside the bin (about 95 % of draws at arena counts) the bin alone gives ``x``;
otherwise the uniform is completed to double precision (``u = (bits + v) / 2**32`` with a fresh
uniform ``v``) and a bisection between the bin's first and last candidates finds ``x``. Half a
random word, one table read and a compare per cell, against the transformed-rejection sampler's
two uniforms, logarithms and log-gamma: four to ten times faster.

Means above ``TABLE_MAX_MEAN`` (their tables would be long and mostly searched) are drawn by
numpy's own Poisson sampler.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import poisson

GUIDE_BITS = 10
GUIDE_BINS = 1 << GUIDE_BITS
TABLE_MAX_MEAN = 1000


def _cdfs_until_one(means: np.ndarray) -> list[np.ndarray]:
    """Per mean: F(0), F(1), ... of Poisson(mean), up to the first value that is 1.0 in floating point."""
    tops = (means + 10 * np.sqrt(means) + 40).astype(np.int64)  # far past the last step below 1.0
    lengths = tops + 1
    x = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values = poisson.cdf(x, np.repeat(means, lengths))  # one call for every table
    cdfs = []
    for mean, cdf in zip(means, np.split(values, np.cumsum(lengths)[:-1])):
        if cdf[-1] != 1.0:  # not expected below TABLE_MAX_MEAN; extend until it is
            top = len(cdf)
            while cdf[-1] != 1.0:
                top *= 2
                cdf = poisson.cdf(np.arange(top), mean)
        cdf = np.maximum.accumulate(cdf)  # non-decreasing, whatever the rounding
        cdfs.append(cdf[: int(np.argmax(cdf == 1.0)) + 1])
    return cdfs


def _guide(cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: the draw where the bin decides it, else -(its first candidate) - 1; and per bin
    its last candidate (int16: a table's values stay below 2,000)."""
    edges = np.arange(GUIDE_BINS, dtype=float) / GUIDE_BINS
    lowest = np.searchsorted(cdf, edges, side="right")  # the draw for the bin's smallest uniform
    # The bin's largest uniform is just below the next edge.
    highest = np.searchsorted(cdf, np.nextafter(edges + 1.0 / GUIDE_BINS, 0.0), side="right")
    return np.where(lowest == highest, lowest, -lowest - 1).astype(np.int16), highest.astype(np.int16)


class PoissonCells:
    """Draws one Poisson count per cell, cell ``c`` with mean ``means[c]`` (non-negative integers)."""

    def __init__(self, means: np.ndarray):
        means = np.asarray(means)
        if means.ndim != 1 or (len(means) and (means.min() < 0 or not np.array_equal(means, np.round(means)))):
            raise ValueError("Poisson means must be a flat array of non-negative whole numbers")
        means = means.astype(np.int64)
        self.size = len(means)
        tabled = means <= TABLE_MAX_MEAN
        self.tabled_at = np.flatnonzero(tabled)
        self.sampled_at = np.flatnonzero(~tabled)
        self.sampled_means = means[~tabled].astype(float)
        values, group = np.unique(means[tabled], return_inverse=True)
        cdfs = _cdfs_until_one(values) if len(values) else []
        starts = np.concatenate([[0], np.cumsum([len(c) for c in cdfs])]).astype(np.int64)
        self.cdf = np.concatenate(cdfs) if cdfs else np.empty(0)
        guides = [_guide(c) for c in cdfs]
        self.guide = np.concatenate([g[0] for g in guides]) if guides else np.empty(0, dtype=np.int16)
        self.highest = np.concatenate([g[1] for g in guides]) if guides else np.empty(0, dtype=np.int16)
        self.guide_base = group.astype(np.int64) * GUIDE_BINS  # where each tabled cell's bins begin
        self.cdf_base = starts[group]  # where each tabled cell's distribution begins

    def draw(self, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
        """One count per cell (into ``out`` when given, int64); the same generator state gives the
        same counts."""
        counts = np.empty(self.size, dtype=np.int64) if out is None else out
        tabled = len(self.tabled_at)
        bits = rng.bit_generator.random_raw((tabled + 1) // 2).view(np.uint32)[:tabled]
        drawn = self.invert(bits, rng.random)
        if len(self.sampled_at):
            counts[self.tabled_at] = drawn
            counts[self.sampled_at] = rng.poisson(self.sampled_means)
        else:
            counts[:] = drawn
        return counts

    def invert(self, bits: np.ndarray, fractions) -> np.ndarray:
        """Counts of the tabled cells for the uniforms ``(bits + v) / 2**32``, one 32-bit word per
        tabled cell; ``fractions(k)`` gives the ``v`` (k uniforms in [0, 1)) for the cells whose bin
        does not decide the count alone."""
        bins = (bits >> np.uint32(32 - GUIDE_BITS)).astype(np.int64)
        bins += self.guide_base
        drawn = self.guide[bins].astype(np.int64)
        searched = np.flatnonzero(drawn < 0)
        if len(searched):
            # The uniform to double precision, kept inside its word's interval, then bisection
            # between the bin's candidates: the smallest x with u < F(x).
            word = bits[searched].astype(float)
            target = np.minimum((word + fractions(len(searched))) / 2.0**32,
                                np.nextafter((word + 1.0) / 2.0**32, 0.0))
            base = self.cdf_base[searched]
            low = base - drawn[searched] - 1
            high = base + self.highest[bins[searched]]
            while True:
                open_ = np.flatnonzero(low < high)
                if not len(open_):
                    break
                middle = (low[open_] + high[open_]) // 2
                below = self.cdf[middle] <= target[open_]
                low[open_] = np.where(below, middle + 1, low[open_])
                high[open_] = np.where(below, high[open_], middle)
            drawn[searched] = low - base
        return drawn
