"""Which benchmarks predict human preference: rank correlation between arena scores and benchmark columns.

For each benchmark column, the models that have both an arena score and a benchmark value are
paired; Spearman's rho and Kendall's tau-b (both with ties handled as scipy does) are computed on
them, with percentile bootstrap confidence intervals from resampling models with replacement.

Results never carry NaN: a column with too few models, or on which every model scores the same,
comes back with ``status`` saying so and ``None`` for the statistics. Bootstrap resamples in which
one side is constant (all picks the same model, say) have no correlation and are left out; the
number kept is reported. Pure numpy/scipy: no Django.
"""
from __future__ import annotations

import math
import secrets
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import stats

DEFAULT_MIN_MODELS = 5
MIN_MODELS_FLOOR = 3  # below three models a rank correlation says nothing at all
DEFAULT_ROUNDS = 1000
DEFAULT_CONFIDENCE = 0.95
# Fewer usable resamples than this share of the rounds: the interval would be dominated by the
# degenerate draws left out, so none is reported.
MIN_VALID_SHARE = 0.5
# Elements of the (resamples × models × models) sign arrays built at once for Kendall's tau.
_CHUNK_ELEMENTS = 1_000_000

STATUS_OK = "ok"
STATUS_TOO_FEW = "too_few_models"
STATUS_CONSTANT = "constant"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


@dataclass(frozen=True)
class Correlation:
    column: str
    status: str  # "ok", "too_few_models" or "constant"
    message: str  # why there is no correlation, when status is not "ok"
    n_models: int
    n_missing: int  # models with an arena score but no usable benchmark value, or the other way round
    spearman: float | None
    spearman_p: float | None
    spearman_ci: Interval | None
    kendall: float | None
    kendall_p: float | None
    kendall_ci: Interval | None
    confidence: float
    bootstrap_rounds: int
    bootstrap_valid: int  # resamples in which both correlations were defined
    seed: int
    points: tuple[tuple[str, float, float], ...]  # (model, arena score, benchmark value) for scatter plots

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column, "status": self.status, "message": self.message, "n_models": self.n_models,
            "n_missing": self.n_missing, "spearman": self.spearman, "spearman_p": self.spearman_p,
            "spearman_ci": self.spearman_ci.to_dict() if self.spearman_ci else None, "kendall": self.kendall,
            "kendall_p": self.kendall_p, "kendall_ci": self.kendall_ci.to_dict() if self.kendall_ci else None,
            "confidence": self.confidence, "bootstrap_rounds": self.bootstrap_rounds,
            "bootstrap_valid": self.bootstrap_valid, "seed": self.seed,
            "points": [{"model": model, "arena": arena, "benchmark": value} for model, arena, value in self.points],
        }


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def paired_scores(arena: Mapping[str, Any], benchmark: Mapping[str, Any]) -> tuple[list[tuple[str, float, float]], int]:
    """Models with a usable value on both sides (sorted by name), and how many had only one."""
    good_arena = {model for model, value in arena.items() if _usable(value)}
    good_bench = {model for model, value in benchmark.items() if _usable(value)}
    both = sorted(good_arena & good_bench)
    points = [(model, float(arena[model]), float(benchmark[model])) for model in both]
    return points, len(good_arena ^ good_bench)


def correlate(arena: Mapping[str, Any], benchmark: Mapping[str, Any], *, column: str = "",
              min_models: int = DEFAULT_MIN_MODELS, bootstrap_rounds: int = DEFAULT_ROUNDS,
              confidence: float = DEFAULT_CONFIDENCE, seed: int | None = None) -> Correlation:
    """Spearman and Kendall correlation of one benchmark column with the arena score.

    ``arena`` and ``benchmark`` map model -> score; None, NaN, infinities and non-numbers count as
    missing. ``seed``: None draws one (reported in the result so the run can be repeated).
    """
    _check_options(min_models, bootstrap_rounds, confidence)
    seed = secrets.randbits(32) if seed is None else int(seed)
    points, n_missing = paired_scores(arena, benchmark)
    base = dict(column=column, n_models=len(points), n_missing=n_missing, confidence=confidence,
                bootstrap_rounds=bootstrap_rounds, seed=seed, points=tuple(points))
    empty = dict(spearman=None, spearman_p=None, spearman_ci=None, kendall=None, kendall_p=None, kendall_ci=None,
                 bootstrap_valid=0)
    if len(points) < min_models:
        return Correlation(status=STATUS_TOO_FEW, message=f"{len(points)} model(s) with both an arena score and "
                           f"this benchmark; at least {min_models} are needed", **base, **empty)
    x = np.array([arena_score for _, arena_score, _ in points])
    y = np.array([value for _, _, value in points])
    for values, side in ((x, "arena score"), (y, "benchmark value")):
        if np.all(values == values[0]):
            return Correlation(status=STATUS_CONSTANT, message=f"every model has the same {side}; "
                               "a rank correlation is undefined", **base, **empty)

    spearman = stats.spearmanr(x, y)
    kendall = stats.kendalltau(x, y)
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(column.encode("utf-8"))]))
    rho_draws, tau_draws = _bootstrap(x, y, bootstrap_rounds, rng)
    valid = np.isfinite(rho_draws) & np.isfinite(tau_draws)
    n_valid = int(valid.sum())
    rho_ci = tau_ci = None
    if bootstrap_rounds and n_valid >= MIN_VALID_SHARE * bootstrap_rounds:
        rho_ci = _percentile(rho_draws[valid], confidence)
        tau_ci = _percentile(tau_draws[valid], confidence)
    return Correlation(
        status=STATUS_OK, message="", spearman=_finite(spearman.statistic), spearman_p=_finite(spearman.pvalue),
        spearman_ci=rho_ci, kendall=_finite(kendall.statistic), kendall_p=_finite(kendall.pvalue), kendall_ci=tau_ci,
        bootstrap_valid=n_valid, **base,
    )


def correlate_columns(arena: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], *,
                      min_models: int = DEFAULT_MIN_MODELS, bootstrap_rounds: int = DEFAULT_ROUNDS,
                      confidence: float = DEFAULT_CONFIDENCE, seed: int | None = None) -> list[Correlation]:
    """``correlate`` for every column of ``{column: {model: value}}`` (e.g. from ``column_table``).

    Each column's resamples come from its own stream derived from ``seed`` and the column name, so
    a column's interval does not change when other columns are added or removed.
    """
    _check_options(min_models, bootstrap_rounds, confidence)
    seed = secrets.randbits(32) if seed is None else int(seed)
    return [correlate(arena, values, column=column, min_models=min_models, bootstrap_rounds=bootstrap_rounds,
                      confidence=confidence, seed=seed) for column, values in columns.items()]


def _check_options(min_models: int, bootstrap_rounds: int, confidence: float) -> None:
    if not isinstance(min_models, int) or min_models < MIN_MODELS_FLOOR:
        raise ValueError(f"min_models must be a whole number >= {MIN_MODELS_FLOOR}; got {min_models!r}")
    if not isinstance(bootstrap_rounds, int) or bootstrap_rounds < 0:
        raise ValueError(f"bootstrap_rounds must be a whole number >= 0; got {bootstrap_rounds!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence!r}")


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _percentile(draws: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def _bootstrap(x: np.ndarray, y: np.ndarray, rounds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho and Kendall's tau-b for ``rounds`` resamples of the models; NaN where undefined."""
    n = len(x)
    if rounds == 0:
        return np.empty(0), np.empty(0)
    picks = rng.integers(0, n, size=(rounds, n))
    rho = _spearman_rows(x[picks], y[picks])
    chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    tau = np.concatenate([_kendall_rows(x[picks[start:start + chunk]], y[picks[start:start + chunk]])
                          for start in range(0, rounds, chunk)])
    return rho, tau


def _spearman_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    # Spearman's rho is Pearson's r on average ranks (ties share the mean of their ranks).
    rx = stats.rankdata(xs, axis=1)
    ry = stats.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=1) / denominator
    rho[denominator == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)


def _kendall_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    # tau-b = (concordant - discordant) / sqrt((pairs - ties in x) (pairs - ties in y)), over pairs i < j.
    # Summing over all ordered pairs counts each pair twice on both sides of the ratio, so it cancels.
    sx = np.sign(xs[:, :, None] - xs[:, None, :])
    sy = np.sign(ys[:, :, None] - ys[:, None, :])
    numerator = (sx * sy).sum(axis=(1, 2))
    untied_x = np.abs(sx).sum(axis=(1, 2))
    untied_y = np.abs(sy).sum(axis=(1, 2))
    denominator = np.sqrt(untied_x * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = numerator / denominator
    tau[denominator == 0] = np.nan
    return np.clip(tau, -1.0, 1.0)


def rank_columns(correlations: Iterable[Correlation], *, by: str = "spearman") -> list[Correlation]:
    """Columns with a correlation first, strongest positive first; the rest after, in the given order."""
    if by not in ("spearman", "kendall"):
        raise ValueError(f"by must be 'spearman' or 'kendall'; got {by!r}")
    items = list(correlations)
    scored = [item for item in items if getattr(item, by) is not None]
    rest = [item for item in items if getattr(item, by) is None]
    return sorted(scored, key=lambda item: -getattr(item, by)) + rest
