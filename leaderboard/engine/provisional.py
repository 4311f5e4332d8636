"""Provisional ratings: models with too few votes are flagged, never dropped."""
from __future__ import annotations

import numpy as np


def provisional_flags(votes: np.ndarray, min_votes: int = 0) -> np.ndarray:
    """True where a model has fewer than ``min_votes`` counted votes (or none at all)."""
    if min_votes < 0:
        raise ValueError(f"min_votes must be >= 0; got {min_votes}")
    return np.asarray(votes) < max(int(min_votes), 1)
