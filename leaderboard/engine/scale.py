"""The rating scale: how model strengths in natural log-odds units become rating points.

A strength difference ``d`` (natural units) means ``P(i beats j) = 1 / (1 + exp(-d))``. On the
rating scale the same probability is ``1 / (1 + base ** ((R_j - R_i) / scale))``, so one natural unit
is ``scale / ln(base)`` points (400 / ln 10 ~ 173.7 with the defaults, as in chess Elo).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class RatingScale:
    scale: float = 400.0
    base: float = 10.0
    initial: float = 1000.0

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"scale must be positive; got {self.scale}")
        if not self.base > 1:
            raise ValueError(f"base must be greater than 1; got {self.base}")

    @property
    def points_per_unit(self) -> float:
        return self.scale / math.log(self.base)

    def to_ratings(self, theta: np.ndarray, names: Sequence[str] = (),
                   anchor: tuple[str, float] | None = None) -> np.ndarray:
        """Ratings from strengths along the last axis: mean ``initial``, or ``anchor=(model, rating)``."""
        theta = np.asarray(theta, dtype=float)
        centred = theta - theta.mean(axis=-1, keepdims=True)
        ratings = self.initial + self.points_per_unit * centred
        if anchor is not None:
            model, value = anchor
            k = anchor_index(names, model)
            ratings = ratings + (float(value) - ratings[..., k : k + 1])
        return ratings

    def expected_score(self, rating_a: float, rating_b: float) -> float:
        return 1.0 / (1.0 + self.base ** ((rating_b - rating_a) / self.scale))

    def as_dict(self) -> dict:
        return {"scale": self.scale, "base": self.base, "initial": self.initial}


def anchor_index(names: Sequence[str], model: str) -> int:
    try:
        return list(names).index(model)
    except ValueError:
        raise ValueError(f"anchor model {model!r} has no counted battles in these votes") from None
