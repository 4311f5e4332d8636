"""Pair sampling for a new battle (pure: no Django)."""
from __future__ import annotations

import random
from collections.abc import Mapping, Hashable


class NotEnoughContenders(Exception):
    pass


def sample_pair(weights: Mapping[Hashable, float], rng: random.Random) -> tuple[Hashable, Hashable]:
    """Draw two different contenders in proportion to their weights, in random left/right order.

    The first is drawn by weight, the second by weight among the rest; the order is then shuffled so
    that neither side is favoured by the draw order.
    """
    candidates = [(key, float(w)) for key, w in weights.items() if w > 0]
    if len(candidates) < 2:
        raise NotEnoughContenders(
            f"A battle needs two available contenders; {len(candidates)} available right now."
        )
    first = _draw(candidates, rng)
    second = _draw([(k, w) for k, w in candidates if k != first], rng)
    return (first, second) if rng.random() < 0.5 else (second, first)


def _draw(candidates: list[tuple[Hashable, float]], rng: random.Random) -> Hashable:
    total = sum(w for _, w in candidates)
    point = rng.random() * total
    for key, weight in candidates:
        point -= weight
        if point < 0:
            return key
    return candidates[-1][0]
