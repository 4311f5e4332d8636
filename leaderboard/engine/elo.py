"""Online Elo: ratings updated vote by vote, in the order the votes were cast.

Unlike Bradley-Terry this depends on vote order (recent votes weigh more), so it is shown next to
the Bradley-Terry rating as a familiar reference, never instead of it. State is one number per
model, updated as rows stream past.
"""
from __future__ import annotations

from typing import Iterable

from leaderboard.engine.outcomes import TiePolicy, check_vote


class OnlineElo:
    """``R_a += K * (S_a - E_a)``, ``R_b -= K * (S_a - E_a)``, ``E_a = 1 / (1 + base^((R_b - R_a)/scale))``.

    A model enters at ``initial`` on its first counted vote. Ties score 0.5 (or are skipped, per
    the tie policy).
    """

    def __init__(self, k_factor: float = 4.0, scale: float = 400.0, base: float = 10.0, initial: float = 1000.0,
                 policy: TiePolicy | None = None):
        if not k_factor > 0:
            raise ValueError(f"k_factor must be positive; got {k_factor}")
        self.k_factor = float(k_factor)
        self.scale = float(scale)
        self.base = float(base)
        self.initial = float(initial)
        self.policy = policy or TiePolicy()
        self.ratings: dict[str, float] = {}
        self.votes = 0

    def update_score(self, model_a: str, model_b: str, score_a: float) -> None:
        """One counted vote with the score of ``model_a`` (1 win, 0 loss, 0.5 tie)."""
        ratings = self.ratings
        rating_a = ratings.get(model_a, self.initial)
        rating_b = ratings.get(model_b, self.initial)
        expected_a = 1.0 / (1.0 + self.base ** ((rating_b - rating_a) / self.scale))
        delta = self.k_factor * (score_a - expected_a)
        ratings[model_a] = rating_a + delta
        ratings[model_b] = rating_b - delta
        self.votes += 1

    def update(self, model_a: str, model_b: str, winner: str) -> None:
        check_vote(model_a, model_b, winner)
        score = self.policy.score_of_a(winner)
        if score is not None:
            self.update_score(model_a, model_b, score)

    def update_many(self, rows: Iterable[tuple[str, str, str]]) -> "OnlineElo":
        for model_a, model_b, winner in rows:
            self.update(model_a, model_b, winner)
        return self

    def rating(self, model: str) -> float:
        return self.ratings.get(model, self.initial)

    def params(self) -> dict:
        return {"k_factor": self.k_factor, "scale": self.scale, "base": self.base, "initial": self.initial}


def online_elo(rows: Iterable[tuple[str, str, str]], **options) -> dict[str, float]:
    """Final online Elo ratings of a vote sequence."""
    return dict(OnlineElo(**options).update_many(rows).ratings)
