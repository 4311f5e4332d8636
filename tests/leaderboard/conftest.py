"""Shared data for the rating tests: the real Chatbot Arena votes and simulated arenas."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

REAL_VOTES = Path(__file__).resolve().parents[3] / "shared" / "data" / "arena33k_en_singleturn.csv"


def real_votes_path() -> Path:
    if not REAL_VOTES.is_file():
        pytest.fail(
            f"real votes file missing: {REAL_VOTES} (25,938 Chatbot Arena votes; see shared/data/SOURCES.md)",
            pytrace=False,
        )
    return REAL_VOTES


@pytest.fixture(scope="session")
def real_votes() -> list[tuple[str, str, str]]:
    with open(real_votes_path(), newline="") as handle:
        return [(row["model_a"], row["model_b"], row["winner"]) for row in csv.DictReader(handle)]


def simulate_votes(strengths: dict[str, float], n_votes: int, seed: int = 0, tie_share: float = 0.25,
                   bothbad_share: float = 0.5) -> list[tuple[str, str, str]]:
    """Votes from a Bradley-Terry arena: uniform random pairs and sides, a share of ties."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    theta = np.array([strengths[name] for name in names])
    a = rng.integers(0, len(names), n_votes)
    b = (a + rng.integers(1, len(names), n_votes)) % len(names)
    p_a = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
    tie = rng.random(n_votes) < tie_share
    bothbad = rng.random(n_votes) < bothbad_share
    a_wins = rng.random(n_votes) < p_a
    winner = np.where(tie, np.where(bothbad, "tie (bothbad)", "tie"), np.where(a_wins, "model_a", "model_b"))
    return [(names[x], names[y], str(w)) for x, y, w in zip(a, b, winner)]


@pytest.fixture
def small_arena() -> list[tuple[str, str, str]]:
    return simulate_votes({"alpha": 1.0, "beta": 0.4, "gamma": 0.0, "delta": -0.3, "eps": -1.1}, 3000, seed=7)
