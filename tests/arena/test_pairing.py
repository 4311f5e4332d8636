"""Pair sampling: weights respected, never the same contender twice, no side favoured."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from arena.pairing import NotEnoughContenders, sample_pair


def test_never_the_same_contender_on_both_sides():
    rng = random.Random(1)
    for _ in range(2000):
        a, b = sample_pair({"x": 5.0, "y": 1.0, "z": 0.01}, rng)
        assert a != b


def test_weights_shape_how_often_a_contender_appears():
    rng = random.Random(2)
    counts = Counter()
    for _ in range(20000):
        counts.update(sample_pair({"heavy": 4.0, "light1": 1.0, "light2": 1.0, "light3": 1.0}, rng))
    assert counts["heavy"] > 1.5 * counts["light1"]
    assert counts["light1"] == pytest.approx(counts["light2"], rel=0.1)


def test_left_right_order_is_balanced():
    rng = random.Random(3)
    left = Counter(sample_pair({"p": 10.0, "q": 1.0}, rng)[0] for _ in range(10000))
    assert left["p"] == pytest.approx(5000, abs=300)


def test_zero_weight_is_never_drawn_and_too_few_is_a_clear_error():
    rng = random.Random(4)
    for _ in range(500):
        assert "off" not in sample_pair({"a": 1, "b": 1, "off": 0}, rng)
    with pytest.raises(NotEnoughContenders, match="needs two available contenders; 1 available"):
        sample_pair({"a": 1, "off": 0}, rng)
