"""The rating engine: votes in, leaderboard out. Pure numpy/scipy, no Django.

``rate(rows)`` streams ``(model_a, model_b, winner)`` rows once, counting outcomes per pair and
updating online Elo as it goes, then fits Bradley-Terry exactly on the counts, bootstraps
confidence intervals, and returns a ``RatingResult``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from leaderboard.engine.bootstrap import (
    DEFAULT_CONFIDENCE, BootstrapResult, bootstrap_bradley_terry, percentile_interval, resolve_seed,
)
from leaderboard.engine.bradley_terry import (
    DEFAULT_MAX_ITER, DEFAULT_PRIOR_SD, DEFAULT_TOLERANCE, DEGENERATE_OPTIONS, ConvergenceError, DegenerateDataError,
    LogitFit, check_identifiable, fit_bradley_terry, log_likelihood, solve_pairwise_logit,
)
from leaderboard.engine.elo import OnlineElo, online_elo
from leaderboard.engine.outcomes import WINNERS, OutcomeCounter, PairOutcomes, ScoredPairs, TiePolicy
from leaderboard.engine.provisional import provisional_flags
from leaderboard.engine.ranking import (
    battle_count_matrix, predicted_average_win_rate, predicted_win_matrix, rank_upper_bound, win_fraction_matrix,
    win_rates,
)
from leaderboard.engine.result import ModelRating, RatingResult, model_rows
from leaderboard.engine.scale import RatingScale, anchor_index
from leaderboard.engine.style import (
    STYLE_FEATURES, StyleResult, answer_style, fit_style_control, style_counts, style_features,
)

__all__ = [
    "rate", "rate_outcomes", "RatingResult", "ModelRating", "TiePolicy", "RatingScale", "OutcomeCounter",
    "PairOutcomes", "ScoredPairs", "OnlineElo", "online_elo", "fit_bradley_terry", "solve_pairwise_logit",
    "log_likelihood", "check_identifiable", "LogitFit", "bootstrap_bradley_terry", "BootstrapResult",
    "percentile_interval", "rank_upper_bound", "battle_count_matrix", "win_fraction_matrix",
    "predicted_win_matrix", "win_rates", "predicted_average_win_rate", "provisional_flags",
    "fit_style_control", "style_features", "style_counts", "answer_style", "StyleResult", "STYLE_FEATURES",
    "ConvergenceError", "DegenerateDataError", "WINNERS",
]


def rate(
    battles: Iterable[tuple[str, str, str]] | PairOutcomes, *, ties: str = "half", bothbad: str = "tie",
    bootstrap_rounds: int = 1000, seed: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
    anchor: tuple[str, float] | None = None, min_votes: int = 0, k_factor: float = 4.0, scale: float = 400.0,
    base: float = 10.0, initial: float = 1000.0, degenerate: str = "regularise",
    prior_sd: float = DEFAULT_PRIOR_SD, tolerance: float = DEFAULT_TOLERANCE, max_iter: int = DEFAULT_MAX_ITER,
) -> RatingResult:
    """Rate models from votes ``(model_a, model_b, winner)`` in the order they were cast.

    ``battles`` is consumed once (any iterator; memory does not grow with its length). Passing
    already aggregated ``PairOutcomes`` skips online Elo (it needs the vote order).

    Ratings are Bradley-Terry maximum likelihood on the scale ``initial + scale * log_base(odds)``,
    mean ``initial`` across models, or shifted so that ``anchor=(model, rating)`` holds.
    Confidence intervals: ``bootstrap_rounds`` multinomial resamples (0 for none), percentile
    intervals at ``confidence``. ``min_votes``: models with fewer counted votes are flagged
    provisional. ``degenerate``: "regularise" (weak prior, reported) or "error" when some rating
    would be infinite. Raises ValueError for a bad vote (with its position), DegenerateDataError,
    ConvergenceError.
    """
    options = dict(
        policy=TiePolicy(ties, bothbad), rating_scale=RatingScale(scale, base, initial),
        bootstrap_rounds=bootstrap_rounds, seed=seed, confidence=confidence, anchor=anchor, min_votes=min_votes,
        degenerate=degenerate, prior_sd=prior_sd, tolerance=tolerance, max_iter=max_iter, k_factor=k_factor,
    )
    _check_options(**options)
    if isinstance(battles, PairOutcomes):
        return _rate_outcomes(battles, elo=None, **options)
    counter = OutcomeCounter()
    elo = OnlineElo(k_factor, scale, base, initial, options["policy"])
    add, score_of_a, update_elo = counter.add, options["policy"].score_of_a, elo.update_score
    for position, (model_a, model_b, winner) in enumerate(battles, 1):
        try:
            add(model_a, model_b, winner)
        except ValueError as error:
            raise ValueError(f"vote {position}: {error}") from error
        score = score_of_a(winner)
        if score is not None:
            update_elo(model_a, model_b, score)
    return _rate_outcomes(counter.outcomes(), elo=elo, **options)


def rate_outcomes(outcomes: PairOutcomes, **kwargs) -> RatingResult:
    """``rate`` on already aggregated outcomes (no online Elo)."""
    return rate(outcomes, **kwargs)


def _check_options(*, policy, rating_scale, bootstrap_rounds, seed, confidence, anchor, min_votes, degenerate,
                   prior_sd, tolerance, max_iter, k_factor) -> None:
    # Checked before a long stream is read, so that a typo fails at once.
    if int(bootstrap_rounds) < 0:
        raise ValueError(f"bootstrap_rounds must be >= 0; got {bootstrap_rounds}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}")
    if int(min_votes) < 0:
        raise ValueError(f"min_votes must be >= 0; got {min_votes}")
    if degenerate not in DEGENERATE_OPTIONS:
        raise ValueError(f"degenerate must be one of {', '.join(DEGENERATE_OPTIONS)}; got {degenerate!r}")
    if not prior_sd > 0 or not tolerance > 0 or int(max_iter) < 1 or not k_factor > 0:
        raise ValueError("prior_sd, tolerance, max_iter and k_factor must be positive")
    if anchor is not None:
        if len(anchor) != 2 or not isinstance(anchor[0], str):
            raise ValueError(f"anchor must be (model, rating); got {anchor!r}")
        float(anchor[1])


def _rate_outcomes(outcomes: PairOutcomes, *, elo: OnlineElo | None, policy, rating_scale, bootstrap_rounds, seed,
                   confidence, anchor, min_votes, degenerate, prior_sd, tolerance, max_iter, k_factor) -> RatingResult:
    pairs = outcomes.scored(policy)
    if outcomes.rows == 0:
        raise ValueError("no votes to rate")
    if pairs.battles == 0:
        raise ValueError(f"no battles left to rate: all {outcomes.rows} votes are ties and ties are dropped")
    names = pairs.names
    if anchor is not None:
        anchor = (anchor[0], float(anchor[1]))
        anchor_index(names, anchor[0])
    fit = fit_bradley_terry(pairs, degenerate=degenerate, prior_sd=prior_sd, tolerance=tolerance, max_iter=max_iter)
    ratings = rating_scale.to_ratings(fit.theta, names, anchor)
    seed = resolve_seed(seed) if bootstrap_rounds else seed
    boot = None
    lower = upper = boot_ratings = None
    if bootstrap_rounds:
        boot = bootstrap_bradley_terry(pairs, fit, rounds=int(bootstrap_rounds), seed=seed, prior_sd=prior_sd,
                                       tolerance=tolerance, max_iter=max_iter)
        boot_ratings = rating_scale.to_ratings(boot.theta, names, anchor)
        lower, upper = percentile_interval(boot_ratings, confidence)
    rank = rank_upper_bound(ratings if lower is None else lower, ratings if upper is None else upper)
    votes = pairs.votes()
    elo_values = [np.nan if elo is None else elo.ratings.get(name, np.nan) for name in names]
    order = sorted(range(len(names)), key=lambda k: (-ratings[k], names[k]))
    index = np.array(order, dtype=np.int64)
    params = {
        **policy.as_dict(), "bootstrap_rounds": int(bootstrap_rounds), "seed": seed, "confidence": confidence,
        "anchor": None if anchor is None else [anchor[0], anchor[1]], "min_votes": int(min_votes),
        **rating_scale.as_dict(), "k_factor": float(k_factor), "degenerate": degenerate, "prior_sd": prior_sd,
        "tolerance": tolerance, "max_iter": int(max_iter),
    }
    return RatingResult(
        models=model_rows(names, ratings, lower, upper, rank, votes, win_rates(pairs),
                          predicted_average_win_rate(fit.theta), elo_values, provisional_flags(votes, min_votes), order),
        battles=pairs.battles, rows=outcomes.rows, dropped=pairs.dropped, params=params,
        names=tuple(names[k] for k in order),
        battle_counts=battle_count_matrix(pairs)[np.ix_(index, index)],
        win_fraction=win_fraction_matrix(pairs)[np.ix_(index, index)],
        predicted_win=predicted_win_matrix(fit.theta)[np.ix_(index, index)],
        theta=fit.theta[index], solver=fit.solver_info(), degeneracy=fit.degeneracy.as_dict(),
        bootstrap=None if boot is None else boot.info(),
        bootstrap_ratings=None if boot_ratings is None else boot_ratings[:, index],
    )
