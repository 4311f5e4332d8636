"""Online Elo against a hand-computed sequence, defaults, tie policy, streaming."""
from __future__ import annotations

import pytest

from leaderboard.engine import OnlineElo, TiePolicy, online_elo, rate


def test_hand_computed_sequence():
    # K = 32, base 10, scale 400, everyone starts at 1000.
    # 1. A beats B: E_A = 0.5, delta = 32 * 0.5 = 16           -> A 1016, B 984
    # 2. B ties C: E_B = 1 / (1 + 10^(16/400)) = 0.4769904127,
    #    delta = 32 * (0.5 - 0.4769904127) = 0.7363067935       -> B 984.7363067935, C 999.2636932065
    # 3. C beats A: E_C = 1 / (1 + 10^((1016 - 999.2636932065)/400)) = 0.4759331308,
    #    delta = 32 * (1 - 0.4759331308) = 16.7701398146         -> C 1016.0338330211, A 999.2298601854
    ratings = online_elo([("A", "B", "model_a"), ("B", "C", "tie"), ("C", "A", "model_a")], k_factor=32)
    assert ratings["A"] == pytest.approx(999.2298601854, abs=1e-9)
    assert ratings["B"] == pytest.approx(984.7363067935, abs=1e-9)
    assert ratings["C"] == pytest.approx(1016.0338330211, abs=1e-9)
    assert sum(ratings.values()) == pytest.approx(3000.0)  # every update is zero-sum


def test_defaults_are_k4_base10_scale400_initial1000():
    elo = OnlineElo()
    assert elo.params() == {"k_factor": 4.0, "scale": 400.0, "base": 10.0, "initial": 1000.0}
    elo.update("x", "y", "model_b")
    assert elo.ratings == {"x": 998.0, "y": 1002.0}


def test_settable_parameters():
    ratings = online_elo([("x", "y", "model_a")], k_factor=10, initial=1500, scale=200, base=2)
    assert ratings == {"x": 1505.0, "y": 1495.0}
    ratings = online_elo([("x", "y", "model_a"), ("x", "y", "model_a")], k_factor=10, scale=200, base=2)
    expected = 1 / (1 + 2 ** ((995 - 1005) / 200))
    assert ratings["x"] == pytest.approx(1005 + 10 * (1 - expected))


def test_tie_policy_skips_dropped_votes():
    votes = [("x", "y", "tie"), ("x", "y", "tie (bothbad)"), ("x", "y", "model_a")]
    dropped = online_elo(votes, policy=TiePolicy(ties="drop"))
    assert dropped == online_elo([("x", "y", "model_a")])
    no_bothbad = OnlineElo(policy=TiePolicy(bothbad="drop")).update_many(votes)
    assert no_bothbad.votes == 2


def test_streaming_state_equals_the_rate_result(small_arena):
    elo = OnlineElo()
    for vote in small_arena:
        elo.update(*vote)
    result = rate(iter(small_arena), bootstrap_rounds=0)
    for row in result.models:
        assert row.elo == pytest.approx(elo.rating(row.model), abs=1e-9)


def test_bad_vote_is_rejected():
    with pytest.raises(ValueError, match="winner must be one of"):
        OnlineElo().update("x", "y", "draw")
