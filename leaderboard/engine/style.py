"""Style control: Bradley-Terry with covariates for answer length and markdown.

Raters favour longer, more formatted answers. Adding, per battle, the difference in style between
the two answers as covariates separates "this model is better" from "this model writes longer or
with more markdown". Each feature is ``(A - B) / (A + B + 1)`` (bounded, symmetric, zero when equal),
standardised across battles, and the logistic model

    P(A beats B) = 1 / (1 + exp(-(theta_A - theta_B + sum_k beta_k x_k)))

is solved exactly (Newton, same criterion as plain Bradley-Terry) on the per-battle rows. ``beta_k``
is the change in log-odds per standard deviation of feature k; the style-controlled ratings are the
``theta`` of this model, i.e. the ratings two answers of equal style would get.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from leaderboard.engine.bootstrap import DEFAULT_CONFIDENCE, MultinomialResampler, percentile_interval, resolve_seed
from leaderboard.engine.bradley_terry import (
    DEFAULT_MAX_ITER, DEFAULT_PRIOR_SD, DEFAULT_TOLERANCE, DEGENERATE_OPTIONS, DegenerateDataError, PairDesign,
    _identifiability, prior_l2, solve_pairwise_logit,
)
from leaderboard.engine.outcomes import WINNERS, TiePolicy, check_vote
from leaderboard.engine.scale import RatingScale

STYLE_FEATURES = ("length", "headers", "list_items", "bold")

# Markdown is counted outside fenced code blocks: a "# comment" in code is not a header.
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_HEADER = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.M)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+\S", re.M)
_BOLD = re.compile(r"\*\*(?=\S)[^*\n]+?\*\*|__(?=\S)[^_\n]+?__")


def answer_style(text: str, *, length_unit: str = "chars") -> np.ndarray:
    """Style counts of one answer: [length, headers, list items, bold spans].

    ``length_unit``: "chars" (characters) or "words" (whitespace-separated tokens, a tokenizer-free
    stand-in for token counts).
    """
    if length_unit == "chars":
        length = len(text)
    elif length_unit == "words":
        length = len(text.split())
    else:
        raise ValueError(f"length_unit must be 'chars' or 'words'; got {length_unit!r}")
    prose = _CODE_BLOCK.sub("", text)
    return np.array([length, len(_HEADER.findall(prose)), len(_LIST_ITEM.findall(prose)), len(_BOLD.findall(prose))],
                    dtype=float)


def style_counts(text_a: str, text_b: str, *, length_unit: str = "chars") -> tuple[np.ndarray, np.ndarray]:
    """Style counts of both answers of one battle."""
    return answer_style(text_a, length_unit=length_unit), answer_style(text_b, length_unit=length_unit)


def raw_style_features(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """``(A - B) / (A + B + 1)`` per battle and feature (counts are non-negative)."""
    a = np.asarray(counts_a, dtype=float)
    b = np.asarray(counts_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"style counts of side A {a.shape} and side B {b.shape} differ in shape")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("style counts must be non-negative")
    return (a - b) / (a + b + 1.0)


def style_features(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features (battles x k), with the mean and standard deviation used.

    A feature that does not vary across battles carries no information; its column is all zeros
    and its standard deviation is reported as 0.
    """
    raw = raw_style_features(counts_a, counts_b)
    if raw.ndim == 1:
        raw = raw[:, None]
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (raw - mean) / safe, 0.0), mean, std


@dataclass(frozen=True)
class StyleResult:
    names: tuple[str, ...]
    ratings: dict[str, float]  # style-controlled
    uncontrolled: dict[str, float]  # plain Bradley-Terry on the same battles
    coefficients: dict[str, float]  # log-odds per standard deviation of each feature
    coefficient_points: dict[str, float]  # the same in rating points
    feature_mean: dict[str, float]
    feature_std: dict[str, float]
    battles: int
    solver: dict
    params: dict
    ci_lower: dict[str, float] | None = None
    ci_upper: dict[str, float] | None = None
    coefficient_ci: dict[str, tuple[float, float]] | None = None
    constant_features: tuple[str, ...] = field(default=())


def _kept_battles(model_a, model_b, winner, policy: TiePolicy):
    """Rows the tie policy keeps, the score of A in each, the model names and indices of both sides.

    Two million battles per refresh go through here, so the checks run as C-level passes over the
    lists; only a list with a bad row is walked row by row, to name that row."""
    try:
        sides = set(model_a), set(model_b)
    except TypeError:  # an unhashable name: the row walk below names it
        sides = None
    if sides is None or not _all_valid(model_a, model_b, winner, sides):
        for row, (a, b, w) in enumerate(zip(model_a, model_b, winner)):
            try:
                check_vote(a, b, w)
            except ValueError as error:
                raise ValueError(f"battle {row + 1}: {error}") from error
    score_of = {w: (np.nan if value is None else value) for w in WINNERS for value in [policy.score_of_a(w)]}
    all_scores = np.fromiter(map(score_of.__getitem__, winner), dtype=float, count=len(winner))
    keep = np.flatnonzero(~np.isnan(all_scores))
    if not len(keep):
        raise ValueError("no battles to rate (after the tie policy)")
    if len(keep) == len(winner):
        kept_a, kept_b = model_a, model_b
        names = tuple(sorted(sides[0] | sides[1]))
    else:
        kept_a = list(map(model_a.__getitem__, keep.tolist()))
        kept_b = list(map(model_b.__getitem__, keep.tolist()))
        names = tuple(sorted(set(kept_a) | set(kept_b)))
    index = {name: k for k, name in enumerate(names)}
    i = np.fromiter(map(index.__getitem__, kept_a), dtype=np.int64, count=len(kept_a))
    j = np.fromiter(map(index.__getitem__, kept_b), dtype=np.int64, count=len(kept_b))
    return keep, all_scores[keep], names, i, j


def _all_valid(model_a, model_b, winner, sides: tuple[set, set]) -> bool:
    return (all(type(name) is str for name in sides[0] | sides[1]) and "" not in sides[0] and "" not in sides[1]
            and not any(map(operator.eq, model_a, model_b)) and set(winner) <= set(WINNERS))


def fit_style_control(
    model_a: Sequence[str], model_b: Sequence[str], winner: Sequence[str], counts_a, counts_b, *,
    feature_names: Sequence[str] = STYLE_FEATURES, ties: str = "half", bothbad: str = "tie",
    scale: float = 400.0, base: float = 10.0, initial: float = 1000.0, anchor: tuple[str, float] | None = None,
    degenerate: str = "regularise", prior_sd: float = DEFAULT_PRIOR_SD, tolerance: float = DEFAULT_TOLERANCE,
    max_iter: int = DEFAULT_MAX_ITER, bootstrap_rounds: int = 0, seed: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> StyleResult:
    """Style-controlled Bradley-Terry from per-battle votes and per-side style counts.

    ``counts_a``/``counts_b``: battles x len(feature_names) non-negative counts (for example from
    ``style_counts``). Ties follow the same policy as ``rate``. With ``bootstrap_rounds`` battles are
    resampled (multinomial weights, drawn as in the plain bootstrap) and every round is solved to
    the same criterion.
    """
    policy = TiePolicy(ties, bothbad)
    rating_scale = RatingScale(scale, base, initial)
    if degenerate not in DEGENERATE_OPTIONS:
        raise ValueError(f"degenerate must be one of {', '.join(DEGENERATE_OPTIONS)}; got {degenerate!r}")
    counts_a = np.asarray(counts_a, dtype=float).reshape(len(model_a), -1)
    counts_b = np.asarray(counts_b, dtype=float).reshape(len(model_a), -1)
    if not len(model_a) == len(model_b) == len(winner):
        raise ValueError("model_a, model_b and winner must have one entry per battle")
    if counts_a.shape[1] != len(feature_names):
        raise ValueError(f"{counts_a.shape[1]} style columns but {len(feature_names)} feature names")
    keep, score, names, i, j = _kept_battles(model_a, model_b, winner, policy)
    weight = np.ones(len(keep))
    features, mean, std = style_features(counts_a[keep], counts_b[keep])
    varying = std > 0
    constant = tuple(name for name, v in zip(feature_names, varying) if not v)
    x_cov = features[:, varying]

    degeneracy = _identifiability(names, i, j, weight, score)
    l2 = 0.0
    if degeneracy.degenerate:
        if degenerate == "error":
            raise DegenerateDataError(degeneracy.describe())
        l2 = prior_l2(prior_sd)
    n = len(names)
    design = PairDesign(i, j, n)  # the same rows in every fit below
    fit = solve_pairwise_logit(i, j, weight, score, n, x_cov, l2=l2, tolerance=tolerance, max_iter=max_iter,
                               design=design)
    # Without covariates the battles of an ordered pair are interchangeable: fit their sums.
    ordered, rows = np.unique(i * n + j, return_inverse=True)
    plain = solve_pairwise_logit(ordered // n, ordered % n, np.bincount(rows, weight, len(ordered)),
                                 np.bincount(rows, score, len(ordered)), n, l2=l2, tolerance=tolerance,
                                 max_iter=max_iter)
    beta = np.zeros(len(feature_names))
    beta[varying] = fit.beta
    ratings = rating_scale.to_ratings(fit.theta, names, anchor)
    uncontrolled = rating_scale.to_ratings(plain.theta, names, anchor)
    ppu = rating_scale.points_per_unit

    ci_lower = ci_upper = coefficient_ci = None
    if bootstrap_rounds:
        seed = resolve_seed(seed)
        rng = np.random.default_rng(seed)
        thetas, betas = [], []
        resampler = MultinomialResampler(np.ones(len(keep), dtype=np.int64))  # each battle once
        for _ in range(int(bootstrap_rounds)):
            # How often each battle is drawn; about a third are not drawn at all and are left out
            # of the round's fit (a row of weight zero adds nothing to the likelihood).
            drawn = resampler.draw(rng, 1)[0]
            rows = np.flatnonzero(drawn)
            resample = drawn[rows].astype(float)
            ri, rj, r_score = i[rows], j[rows], score[rows]
            round_l2 = l2
            if not l2 and _identifiability(names, ri, rj, resample, resample * r_score).degenerate:
                round_l2 = prior_l2(prior_sd)  # this resample lost some model's only win
            round_fit = solve_pairwise_logit(ri, rj, resample, resample * r_score, n, x_cov[rows], l2=round_l2,
                                             tolerance=tolerance, max_iter=max_iter, theta0=fit.theta, beta0=fit.beta,
                                             with_log_likelihood=False)
            thetas.append(round_fit.theta)
            full = np.zeros(len(feature_names))
            full[varying] = round_fit.beta
            betas.append(full)
        low, high = percentile_interval(rating_scale.to_ratings(np.array(thetas), names, anchor), confidence)
        ci_lower = dict(zip(names, low.tolist()))
        ci_upper = dict(zip(names, high.tolist()))
        beta_low, beta_high = percentile_interval(np.array(betas), confidence)
        coefficient_ci = {name: (float(lo), float(hi)) for name, lo, hi in zip(feature_names, beta_low, beta_high)}

    return StyleResult(
        names=names, ratings=dict(zip(names, ratings.tolist())), uncontrolled=dict(zip(names, uncontrolled.tolist())),
        coefficients=dict(zip(feature_names, beta.tolist())),
        coefficient_points=dict(zip(feature_names, (beta * ppu).tolist())),
        feature_mean=dict(zip(feature_names, mean.tolist())), feature_std=dict(zip(feature_names, std.tolist())),
        battles=len(keep), solver={**fit.solver_info(), "degeneracy": degeneracy.as_dict()},
        params={**policy.as_dict(), **rating_scale.as_dict(), "anchor": anchor, "bootstrap_rounds": int(bootstrap_rounds),
                "seed": seed, "confidence": confidence, "features": list(feature_names)},
        ci_lower=ci_lower, ci_upper=ci_upper, coefficient_ci=coefficient_ci, constant_features=constant,
    )
