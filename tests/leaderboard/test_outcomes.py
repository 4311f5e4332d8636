"""Counting votes into pair outcomes: cells, folding into unordered pairs, tie policies, streaming."""
from __future__ import annotations

import numpy as np
import pytest

from leaderboard.engine import OutcomeCounter, PairOutcomes, TiePolicy

VOTES = [
    ("b", "a", "model_a"), ("a", "b", "model_a"), ("a", "b", "tie"), ("b", "a", "tie (bothbad)"),
    ("a", "c", "model_b"), ("a", "c", "model_b"),
]


def test_ordered_cells_are_counted():
    outcomes = PairOutcomes.from_rows(VOTES)
    assert outcomes.names == ("a", "b", "c")  # sorted, whatever the vote order
    table = {(outcomes.names[f], outcomes.names[s]): (wf, ws, t, bb) for f, s, wf, ws, t, bb in zip(
        outcomes.first, outcomes.second, outcomes.wins_first, outcomes.wins_second, outcomes.ties, outcomes.bothbad)}
    assert table == {("a", "b"): (1, 0, 1, 0), ("b", "a"): (1, 0, 0, 1), ("a", "c"): (0, 2, 0, 0)}
    assert outcomes.rows == 6


@pytest.mark.parametrize("policy, expected", [
    # (wins of a over b, wins of b over a, counted ties) for the pair (a, b)
    (TiePolicy(), (1, 1, 2)),
    (TiePolicy(bothbad="drop"), (1, 1, 1)),
    (TiePolicy(ties="drop"), (1, 1, 0)),
])
def test_folding_under_each_tie_policy(policy, expected):
    pairs = PairOutcomes.from_rows(VOTES).scored(policy)
    ab = int(np.flatnonzero((pairs.i == 0) & (pairs.j == 1))[0])
    assert (pairs.wins_i[ab], pairs.wins_j[ab], pairs.ties[ab]) == expected
    assert pairs.score_i[ab] == expected[0] + expected[2] / 2
    assert pairs.battles == 6 - (2 - expected[2])
    assert pairs.dropped == 2 - expected[2]
    assert pairs.votes().tolist() == [pairs.battles, sum(expected), 2]


def test_policy_scores():
    assert [TiePolicy().score_of_a(w) for w in ("model_a", "model_b", "tie", "tie (bothbad)")] == [1, 0, 0.5, 0.5]
    assert TiePolicy(bothbad="drop").score_of_a("tie (bothbad)") is None
    assert TiePolicy(ties="drop").score_of_a("tie") is None
    with pytest.raises(ValueError, match="bothbad must be one of"):
        TiePolicy(bothbad="loss")


@pytest.mark.parametrize("vote, message", [
    (("a", "b", "A"), "winner must be one of"),
    (("a", "a", "tie"), "cannot battle itself"),
    (("", "b", "tie"), "model_a must be a non-empty string"),
    (("a", None, "tie"), "model_b must be a non-empty string"),
    ((3, "b", "tie"), "model_a must be a non-empty string"),
])
def test_bad_votes(vote, message):
    with pytest.raises(ValueError, match=message):
        OutcomeCounter().add(*vote)


def test_memory_grows_with_cells_not_votes():
    counter = OutcomeCounter()
    names = [f"m{k}" for k in range(10)]
    for k in range(200_000):
        counter.add(names[k % 10], names[(k * 7 + 1) % 10 if (k * 7 + 1) % 10 != k % 10 else (k + 1) % 10],
                    ("model_a", "model_b", "tie")[k % 3])
    assert counter.rows == 200_000
    assert counter.distinct_cells <= 10 * 9 * 4
