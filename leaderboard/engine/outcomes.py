"""Vote outcomes, aggregated into per-pair counts while the votes stream past.

A vote is a row ``(model_a, model_b, winner)`` with ``winner`` one of ``model_a``, ``model_b``,
``tie`` or ``tie (bothbad)``. Everything downstream (Bradley-Terry, bootstrap, matrices) needs only
how often each outcome happened for each pair, so rows are counted and then discarded: memory grows
with the number of distinct (pair, outcome) cells, never with the number of votes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

MODEL_A = "model_a"
MODEL_B = "model_b"
TIE = "tie"
TIE_BOTHBAD = "tie (bothbad)"
WINNERS = (MODEL_A, MODEL_B, TIE, TIE_BOTHBAD)
_WINNER_SET = frozenset(WINNERS)

TIE_OPTIONS = ("half", "drop")
BOTHBAD_OPTIONS = ("tie", "drop")


@dataclass(frozen=True)
class TiePolicy:
    """How ties enter the ratings.

    ``ties="half"`` (default): a tie is half a win for each side. ``ties="drop"``: every tie,
    both-bad included, is left out. ``bothbad="drop"`` leaves out only ``tie (bothbad)`` (the rater
    disliked both answers, which says little about which is better); ``bothbad="tie"`` (default)
    treats it like any other tie.
    """

    ties: str = "half"
    bothbad: str = "tie"

    def __post_init__(self):
        if self.ties not in TIE_OPTIONS:
            raise ValueError(f"ties must be one of {', '.join(TIE_OPTIONS)}; got {self.ties!r}")
        if self.bothbad not in BOTHBAD_OPTIONS:
            raise ValueError(f"bothbad must be one of {', '.join(BOTHBAD_OPTIONS)}; got {self.bothbad!r}")

    def keeps_ties(self) -> bool:
        return self.ties == "half"

    def keeps_bothbad(self) -> bool:
        return self.ties == "half" and self.bothbad == "tie"

    def score_of_a(self, winner: str) -> float | None:
        """Score of ``model_a`` for one vote (1, 0 or 0.5), or None when the policy drops the vote."""
        if winner == MODEL_A:
            return 1.0
        if winner == MODEL_B:
            return 0.0
        if winner == TIE:
            return 0.5 if self.keeps_ties() else None
        if winner == TIE_BOTHBAD:
            return 0.5 if self.keeps_bothbad() else None
        raise ValueError(f"winner must be one of {', '.join(WINNERS)}; got {winner!r}")

    def as_dict(self) -> dict:
        return {"ties": self.ties, "bothbad": self.bothbad}


def check_vote(model_a, model_b, winner) -> None:
    """Raise ValueError with a plain message when a vote cannot be counted."""
    if not isinstance(model_a, str) or not model_a:
        raise ValueError(f"model_a must be a non-empty string; got {model_a!r}")
    if not isinstance(model_b, str) or not model_b:
        raise ValueError(f"model_b must be a non-empty string; got {model_b!r}")
    if model_a == model_b:
        raise ValueError(f"a model cannot battle itself ({model_a!r} on both sides)")
    if winner not in _WINNER_SET:
        raise ValueError(f"winner must be one of {', '.join(repr(w) for w in WINNERS)}; got {winner!r}")


class OutcomeCounter:
    """Counts votes per (model_a, model_b, winner) cell; feed it rows one at a time."""

    def __init__(self):
        self._cells: dict[tuple[str, str, str], int] = {}
        self.rows = 0

    def add(self, model_a: str, model_b: str, winner: str) -> None:
        # One cheap test on the hot path; the full check only runs to build the error message.
        if (winner not in _WINNER_SET or model_a == model_b or type(model_a) is not str or type(model_b) is not str
                or not model_a or not model_b):
            check_vote(model_a, model_b, winner)
        key = (model_a, model_b, winner)
        cells = self._cells
        cells[key] = cells.get(key, 0) + 1
        self.rows += 1

    def update(self, rows: Iterable[tuple[str, str, str]]) -> "OutcomeCounter":
        for model_a, model_b, winner in rows:
            self.add(model_a, model_b, winner)
        return self

    @property
    def distinct_cells(self) -> int:
        """Distinct (model_a, model_b, winner) combinations seen: what memory grows with."""
        return len(self._cells)

    def outcomes(self) -> "PairOutcomes":
        names = sorted({name for a, b, _ in self._cells for name in (a, b)})
        index = {name: k for k, name in enumerate(names)}
        ordered: dict[tuple[int, int], list[int]] = {}
        column = {MODEL_A: 0, MODEL_B: 1, TIE: 2, TIE_BOTHBAD: 3}
        for (model_a, model_b, winner), count in self._cells.items():
            counts = ordered.setdefault((index[model_a], index[model_b]), [0, 0, 0, 0])
            counts[column[winner]] += count
        keys = sorted(ordered)
        table = np.array([ordered[k] for k in keys], dtype=np.int64).reshape(-1, 4)
        pairs = np.array(keys, dtype=np.int64).reshape(-1, 2)
        return PairOutcomes(
            names=tuple(names), first=pairs[:, 0], second=pairs[:, 1],
            wins_first=table[:, 0], wins_second=table[:, 1], ties=table[:, 2], bothbad=table[:, 3],
        )


@dataclass(frozen=True)
class PairOutcomes:
    """Vote counts per ordered pair (``first`` sat on side A, ``second`` on side B).

    Models are indexed in sorted name order so that results never depend on the order of the votes.
    """

    names: tuple[str, ...]
    first: np.ndarray
    second: np.ndarray
    wins_first: np.ndarray
    wins_second: np.ndarray
    ties: np.ndarray
    bothbad: np.ndarray

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str]]) -> "PairOutcomes":
        return OutcomeCounter().update(rows).outcomes()

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def rows(self) -> int:
        return int(self.wins_first.sum() + self.wins_second.sum() + self.ties.sum() + self.bothbad.sum())

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown model {name!r}") from None

    def scored(self, policy: TiePolicy | None = None) -> "ScoredPairs":
        """Fold ordered pairs into unordered ones (i < j) under a tie policy."""
        policy = policy or TiePolicy()
        n = self.n_models
        ties = np.zeros_like(self.ties)
        if policy.keeps_ties():
            ties = ties + self.ties
        if policy.keeps_bothbad():
            ties = ties + self.bothbad
        low = np.minimum(self.first, self.second)
        high = np.maximum(self.first, self.second)
        first_is_low = self.first == low
        wins_low = np.where(first_is_low, self.wins_first, self.wins_second)
        wins_high = np.where(first_is_low, self.wins_second, self.wins_first)
        key = low * n + high
        unique, inverse = np.unique(key, return_inverse=True)
        size = len(unique)
        agg = lambda values: np.bincount(inverse, weights=values, minlength=size).astype(np.int64)  # noqa: E731
        wins_i, wins_j, ties_ij = agg(wins_low), agg(wins_high), agg(ties)
        keep = (wins_i + wins_j + ties_ij) > 0
        dropped = self.rows - int(wins_i.sum() + wins_j.sum() + ties_ij.sum())
        return ScoredPairs(
            names=self.names, i=(unique // n)[keep], j=(unique % n)[keep],
            wins_i=wins_i[keep], wins_j=wins_j[keep], ties=ties_ij[keep], policy=policy, dropped=dropped,
        )


@dataclass(frozen=True)
class ScoredPairs:
    """Counted battles per unordered pair ``i < j``: wins of i, wins of j, ties (half each)."""

    names: tuple[str, ...]
    i: np.ndarray
    j: np.ndarray
    wins_i: np.ndarray
    wins_j: np.ndarray
    ties: np.ndarray
    policy: TiePolicy
    dropped: int = 0

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def battles_per_pair(self) -> np.ndarray:
        return self.wins_i + self.wins_j + self.ties

    @property
    def score_i(self) -> np.ndarray:
        """Score of the lower-indexed model in each pair: wins plus half the ties."""
        return self.wins_i + 0.5 * self.ties

    @property
    def battles(self) -> int:
        return int(self.battles_per_pair.sum())

    def votes(self) -> np.ndarray:
        """Counted battles per model."""
        n = self.battles_per_pair
        return (np.bincount(self.i, n, self.n_models) + np.bincount(self.j, n, self.n_models)).astype(np.int64)

    def scores(self) -> np.ndarray:
        """Per model: wins plus half the ties."""
        s_i = self.score_i
        s_j = self.battles_per_pair - s_i
        return np.bincount(self.i, s_i, self.n_models) + np.bincount(self.j, s_j, self.n_models)
