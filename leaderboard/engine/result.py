"""What ``rate`` returns: one row per model plus the matrices and what the solver did."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ModelRating:
    model: str
    rating: float  # Bradley-Terry rating
    ci_lower: float | None  # bootstrap percentile interval (None without bootstrap)
    ci_upper: float | None
    rank_ub: int  # 1 + models whose lower bound is above this model's upper bound
    votes: int  # counted battles
    win_rate: float | None  # observed: (wins + ties / 2) / votes; None without votes
    predicted_win_rate: float  # Bradley-Terry: mean win probability against every other model
    elo: float | None  # online Elo in vote order (None when not computed or the model never played)
    provisional: bool  # fewer than min_votes counted votes

    def as_dict(self) -> dict:
        return {
            "model": self.model, "rating": self.rating, "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
            "rank_ub": self.rank_ub, "votes": self.votes, "win_rate": self.win_rate, "elo": self.elo,
            "provisional": self.provisional,
        }


@dataclass(frozen=True)
class RatingResult:
    models: tuple[ModelRating, ...]  # by rating, highest first
    battles: int  # battles counted in the fit (after the tie policy)
    rows: int  # votes read
    dropped: int  # votes left out by the tie policy
    params: dict  # settings used (seed included, drawn if none was given)
    names: tuple[str, ...]  # row/column order of the matrices (= order of ``models``)
    battle_counts: np.ndarray  # counted battles between each two models
    win_fraction: np.ndarray  # observed score of row vs column, NaN where they never met
    predicted_win: np.ndarray  # Bradley-Terry P(row beats column)
    theta: np.ndarray  # strengths in natural log-odds units, in ``names`` order
    solver: dict  # method, iterations, max_gradient, gradient_threshold, max_step, converged, regularisation
    degeneracy: dict  # why the data needed the weak prior, if they did
    bootstrap: dict | None  # rounds, seed, degenerate_rounds, max_gradient_ratio, iterations, seconds
    bootstrap_ratings: np.ndarray | None  # rounds x models, ``names`` order

    def model(self, name: str) -> ModelRating:
        for row in self.models:
            if row.model == name:
                return row
        raise KeyError(f"unknown model {name!r}")

    @property
    def ratings(self) -> dict[str, float]:
        return {row.model: row.rating for row in self.models}

    def to_json_dict(self) -> dict:
        """``{"battles", "params", "models"}``; solver and bootstrap details sit in ``params["solver"]``."""
        params = dict(self.params)
        params["solver"] = {
            **self.solver, "rows_read": self.rows, "dropped_by_tie_policy": self.dropped,
            "degeneracy": self.degeneracy, "bootstrap": self.bootstrap,
        }
        return {"battles": self.battles, "params": params, "models": [row.as_dict() for row in self.models]}


def model_rows(names, ratings, lower, upper, rank, votes, win_rate, predicted_win_rate, elo, provisional, order):
    rows = []
    for k in order:
        rows.append(ModelRating(
            model=names[k], rating=float(ratings[k]),
            ci_lower=None if lower is None else float(lower[k]), ci_upper=None if upper is None else float(upper[k]),
            rank_ub=int(rank[k]), votes=int(votes[k]), win_rate=_number(win_rate[k]),
            predicted_win_rate=float(predicted_win_rate[k]), elo=_number(elo[k]), provisional=bool(provisional[k]),
        ))
    return tuple(rows)
