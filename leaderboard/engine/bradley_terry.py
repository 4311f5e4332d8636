"""Bradley-Terry maximum likelihood, solved exactly by Newton's method.

Model: ``P(i beats j) = 1 / (1 + exp(-(theta_i - theta_j + x . beta)))`` where ``x`` are optional
per-battle covariates (style control) and a tie counts as half a win for each side, i.e. a row with
weight ``n`` and score ``s`` contributes ``s log p + (n - s) log(1 - p)`` to the log-likelihood.

The log-likelihood is concave; its Hessian in ``theta`` is a weighted graph Laplacian whose only
null direction is "add a constant to every strength". Newton's method with that direction pinned
(strengths sum to zero) and a backtracking line search converges globally and quadratically, so
the fit is run to a stated criterion rather than for a fixed number of steps:

* ``max |gradient| <= tolerance * battles`` (gradient of the log-likelihood in natural units,
  summed over battles; default tolerance 1e-6), and
* the Newton step still to take is below ``step_tolerance`` (1e-8 natural units, about 2e-6 rating
  points), so the remaining error in every strength is negligible even for a model with few
  battles among very many.

If the criterion is not met within ``max_iter`` steps, ConvergenceError is raised.

Finite maximum-likelihood strengths exist only when the "scored against" graph (edge i -> j when i
won or tied at least once against j) is strongly connected: a model with no wins, a model with no
losses, or groups of models never compared make some strengths run off to infinity. Such data are
either rejected (``degenerate="error"``: DegenerateDataError naming the models) or fitted with a
weak Gaussian prior on the strengths (``degenerate="regularise"``, the default: an L2 penalty
``sum(theta ** 2) / (2 * prior_sd ** 2)`` with ``prior_sd`` = 10 natural units, about 1,737 rating
points). The penalty is applied only to degenerate data and is reported in the fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.linalg import lapack
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

from leaderboard.engine.blas import single_threaded_blas
from leaderboard.engine.outcomes import ScoredPairs

DEFAULT_TOLERANCE = 1e-6
DEFAULT_STEP_TOLERANCE = 1e-8
DEFAULT_PRIOR_SD = 10.0
DEFAULT_MAX_ITER = 100
SINGULAR_PIVOT_RATIO = 1e-12
DEGENERATE_OPTIONS = ("regularise", "error")


class ConvergenceError(RuntimeError):
    """The solver did not meet its convergence criterion."""


class DegenerateDataError(ValueError):
    """The votes do not determine finite Bradley-Terry ratings."""


@dataclass(frozen=True)
class Degeneracy:
    """Why maximum-likelihood strengths would not be finite (empty when they are)."""

    no_wins: tuple[str, ...] = ()
    no_losses: tuple[str, ...] = ()
    no_battles: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()  # connected groups of models, when more than one
    strong_groups: int = 1

    @property
    def degenerate(self) -> bool:
        return self.strong_groups > 1

    def describe(self) -> str:
        if not self.degenerate:
            return "ratings are identifiable"
        parts = []
        if self.no_wins:
            parts.append(f"no wins or ties: {', '.join(self.no_wins)}")
        if self.no_losses:
            parts.append(f"no losses or ties: {', '.join(self.no_losses)}")
        if self.no_battles:
            parts.append(f"no counted battles: {', '.join(self.no_battles)}")
        if len(self.groups) > 1:
            shown = "; ".join("{" + ", ".join(group) + "}" for group in self.groups)
            parts.append(f"{len(self.groups)} groups of models never compared with each other: {shown}")
        if not parts:
            parts.append(f"{self.strong_groups} groups of models where one group never lost (or never won) against another")
        return "maximum-likelihood ratings are infinite or undetermined (" + "; ".join(parts) + ")"

    def as_dict(self) -> dict:
        return {
            "degenerate": self.degenerate, "no_wins": list(self.no_wins), "no_losses": list(self.no_losses),
            "no_battles": list(self.no_battles), "groups": [list(g) for g in self.groups],
            "strong_groups": self.strong_groups,
        }


def check_identifiable(pairs: ScoredPairs) -> Degeneracy:
    """Strong connectivity of the scored-against graph, with the usual culprits named."""
    return _identifiability(pairs.names, pairs.i, pairs.j, pairs.battles_per_pair, pairs.score_i)


def _identifiability(names, i, j, weight, score) -> Degeneracy:
    n = len(names)
    graph = _scored_graph(n, i, j, weight, score)
    strong, _ = connected_components(graph, directed=True, connection="strong")
    if strong <= 1:
        return Degeneracy()
    weak, labels = connected_components(graph, directed=True, connection="weak")
    votes = np.bincount(i, weight, n) + np.bincount(j, weight, n)
    scores = np.bincount(i, score, n) + np.bincount(j, weight - score, n)
    groups = ()
    if weak > 1:
        groups = tuple(tuple(names[k] for k in range(n) if labels[k] == g) for g in range(weak))
    return Degeneracy(
        no_wins=tuple(names[k] for k in range(n) if votes[k] > 0 and scores[k] <= 0),
        no_losses=tuple(names[k] for k in range(n) if votes[k] > 0 and scores[k] >= votes[k]),
        no_battles=tuple(names[k] for k in range(n) if votes[k] <= 0),
        groups=groups, strong_groups=int(strong),
    )


def _scored_graph(n, i, j, weight, score):
    forward = score > 0
    backward = (weight - score) > 0
    rows = np.concatenate([i[forward], j[backward]])
    cols = np.concatenate([j[forward], i[backward]])
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()


def is_identifiable(n_models: int, i, j, weight, score) -> bool:
    graph = _scored_graph(n_models, i, j, weight, score)
    return connected_components(graph, directed=True, connection="strong")[0] <= 1


class ScoredGraphs:
    """``is_identifiable`` for many score vectors on the same rows (bootstrap resamples): the
    graph's layout (every possible edge i -> j and j -> i, ordered by source) is built once and each
    call only marks which edges are present."""

    def __init__(self, n_models: int, i: np.ndarray, j: np.ndarray):
        sources = np.concatenate([i, j])
        targets = np.concatenate([j, i])
        self.order = np.lexsort((targets, sources))
        self.n = int(n_models)
        self.indices = targets[self.order].astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(sources, minlength=self.n))]).astype(np.int32)
        self.i, self.j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        self.unique_pairs = _unique_pairs(self.i, self.j, self.n)

    def identifiable_columns(self, weight: np.ndarray, score: np.ndarray) -> np.ndarray:
        """``identifiable`` for every column of ``weight`` and ``score`` (rows x resamples) at once:
        model 0 reaches every model and every model reaches it, found by repeated boolean
        products of each resample's adjacency matrix (a few steps: arena graphs are dense)."""
        rounds = weight.shape[1]
        if not self.unique_pairs:
            return np.array([self.identifiable(weight[:, r], score[:, r]) for r in range(rounds)], dtype=bool)
        n = self.n
        verdict = np.empty(rounds, dtype=bool)
        step = max(1, MATRIX_ENTRIES_PER_CHECK // (n * n))
        for start in range(0, rounds, step):
            w, s = weight[:, start : start + step], score[:, start : start + step]
            adjacency = np.zeros((w.shape[1], n, n), dtype=np.float32)
            adjacency[:, self.i, self.j] = (s > 0).T  # i scored against j
            adjacency[:, self.j, self.i] = (w - s > 0).T
            verdict[start : start + w.shape[1]] = (_reaches_every_node(adjacency)
                                                   & _reaches_every_node(adjacency.transpose(0, 2, 1)))
        return verdict

    def identifiable(self, weight: np.ndarray, score: np.ndarray) -> bool:
        present = np.concatenate([score > 0, (weight - score) > 0])[self.order]
        # A copy of the layout: eliminate_zeros (absent edges must not count) works in place.
        graph = csr_matrix((present.astype(float), self.indices.copy(), self.indptr.copy()), shape=(self.n, self.n))
        graph.eliminate_zeros()
        return connected_components(graph, directed=True, connection="strong")[0] <= 1


def _unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> bool:
    """Each unordered pair of models in at most one row (aggregated cells), none against itself."""
    return bool(len(i) <= n * (n - 1) // 2 and not (i == j).any()
                and len(np.unique(np.minimum(i, j) * n + np.maximum(i, j))) == len(i))


MATRIX_ENTRIES_PER_CHECK = 4_000_000  # adjacency entries held at once by identifiable_columns (16 MB)


def _reaches_every_node(adjacency: np.ndarray) -> np.ndarray:
    """Per stacked adjacency matrix (k x n x n, entry [u, v] > 0 for an edge u -> v): whether node 0
    reaches every node."""
    k, n, _ = adjacency.shape
    reached = np.zeros((k, 1, n), dtype=np.float32)
    reached[:, 0, 0] = 1.0
    count = np.ones(k)
    while True:
        reached = np.minimum(reached + reached @ adjacency, 1.0)  # one more edge from the reached set
        now = reached.sum(axis=(1, 2))
        if (now == count).all():
            return now == n
        count = now


@dataclass(frozen=True)
class LogitFit:
    """A solved pairwise logistic model, with what the solver did."""

    theta: np.ndarray  # strengths, natural units, summing to zero
    beta: np.ndarray  # covariate coefficients (empty without covariates)
    iterations: int
    max_gradient: float  # max |gradient| at the solution (log-likelihood summed over battles)
    max_step: float  # max |Newton step| at the last iterate (natural units), taken as the final step
    gradient_threshold: float  # tolerance * battles
    log_likelihood: float
    l2: float  # penalty strength applied (0 unless the data were degenerate)
    converged: bool
    battles: float
    degeneracy: Degeneracy = field(default_factory=Degeneracy)
    singular: bool = False  # Hessian singular at the solution: some parameters are not determined

    def solver_info(self) -> dict:
        return {
            "method": "newton", "iterations": self.iterations, "max_gradient": self.max_gradient,
            "gradient_threshold": self.gradient_threshold, "max_step": self.max_step,
            "converged": self.converged, "log_likelihood": self.log_likelihood, "singular_hessian": self.singular,
            "regularisation": ({"kind": "l2", "strength": self.l2, "reason": self.degeneracy.describe()}
                               if self.l2 > 0 else None),
        }


def _objective(d, weight, score):
    return _objective_and_decay(d, weight, score)[0]


def _objective_and_decay(d, weight, score) -> tuple[float, np.ndarray]:
    # -log-likelihood: score * softplus(-d) + (weight - score) * softplus(d), with
    # softplus(x) = max(x, 0) + log1p(exp(-|x|)), exact far into the tails. The log1p term is the
    # same for d and -d, so it is computed once (a tenth of the time of two logaddexp calls).
    # exp(-|d|) is returned too: the win probabilities at the same point are made from it.
    decay = np.exp(-np.abs(d))
    value = np.dot(weight, np.log1p(decay)) + np.dot(score, np.maximum(-d, 0.0)) + np.dot(weight - score, np.maximum(d, 0.0))
    return float(value), decay


def _probability(d: np.ndarray, decay: np.ndarray) -> np.ndarray:
    # expit(d) from exp(-|d|): 1 / (1 + e) where d >= 0, e / (1 + e) elsewhere.
    inverse = 1.0 / (1.0 + decay)
    return np.where(d >= 0, inverse, decay * inverse)


class PairDesign:
    """Index structures of the rows ``(i, j)`` of a pairwise fit, built once and reused by every
    Newton step (and, passed as ``design=``, by every bootstrap round on the same pairs)."""

    def __init__(self, i: np.ndarray, j: np.ndarray, n_models: int):
        self.i = np.asarray(i, dtype=np.int64)
        self.j = np.asarray(j, dtype=np.int64)
        self.n = n = int(n_models)
        rows = len(self.i)
        # models x rows: +1 at i, -1 at j (signed) or 1 at both (unsigned), as the transpose of a
        # rows x models matrix with two entries per row (built without sorting); sparse products
        # sum per model three times faster than two weighted bincounts.
        indptr = np.arange(0, 2 * rows + 1, 2)
        indices = np.stack([self.i, self.j], axis=1).ravel()
        signs = np.tile([1.0, -1.0], rows)
        self.signed = csr_matrix((signs, indices, indptr), shape=(rows, n)).T
        self.unsigned = csr_matrix((np.abs(signs), indices, indptr), shape=(rows, n)).T
        self.flat_ij, self.flat_ji = self.i * n + self.j, self.j * n + self.i
        # Each unordered pair at most once (aggregated cells): the Laplacian is filled by
        # assignment; rows that repeat a pair (one row per battle) are summed.
        self.unique_pairs = _unique_pairs(self.i, self.j, n)

    def difference(self, values: np.ndarray) -> np.ndarray:
        """Per model: sum of ``values`` over its rows as i minus over its rows as j."""
        return self.signed @ values

    def total(self, values: np.ndarray) -> np.ndarray:
        """Per model: sum of ``values`` over its rows, on either side."""
        return self.unsigned @ values

    def negative_off_diagonal(self, curvature: np.ndarray) -> np.ndarray:
        """n x n matrix with -curvature summed at (i, j) and (j, i), zero elsewhere."""
        n = self.n
        if self.unique_pairs:
            matrix = np.zeros(n * n)
            matrix[self.flat_ij] = -curvature
            matrix[self.flat_ji] = -curvature
            return matrix.reshape(n, n)
        return -(np.bincount(self.flat_ij, curvature, n * n) + np.bincount(self.flat_ji, curvature, n * n)).reshape(n, n)


def solve_pairwise_logit(
    i: np.ndarray, j: np.ndarray, weight: np.ndarray, score: np.ndarray, n_models: int,
    covariates: np.ndarray | None = None, *, l2: float = 0.0, tolerance: float = DEFAULT_TOLERANCE,
    step_tolerance: float = DEFAULT_STEP_TOLERANCE, max_iter: int = DEFAULT_MAX_ITER,
    theta0: np.ndarray | None = None, beta0: np.ndarray | None = None, raise_on_failure: bool = True,
    with_log_likelihood: bool = True, design: PairDesign | None = None,
) -> LogitFit:
    """Maximise the pairwise logistic likelihood (plus ``-l2/2 |theta|^2``) by damped Newton steps.

    Rows are battles or aggregated pairs: ``i``, ``j`` model indices, ``weight`` battles in the row,
    ``score`` the score of ``i`` (wins plus half the ties). ``covariates`` (rows x k) enter the log-odds
    of ``i`` beating ``j`` linearly. Without ``l2`` the data must be identifiable (see
    ``check_identifiable``), otherwise the solver reports non-convergence. Callers that only need the
    strengths (the bootstrap) pass ``with_log_likelihood=False``; the fit then reports NaN for it.
    ``design`` is ``PairDesign(i, j, n_models)``, built here unless given.
    """
    with single_threaded_blas():
        return _newton(i, j, weight, score, n_models, covariates, l2, tolerance, step_tolerance, max_iter, theta0,
                       beta0, raise_on_failure, with_log_likelihood, design)


def _newton(i, j, weight, score, n_models, covariates, l2, tolerance, step_tolerance, max_iter, theta0, beta0,
            raise_on_failure, with_log_likelihood, design) -> LogitFit:
    if design is None:
        design = PairDesign(i, j, n_models)
    elif design.n != int(n_models) or len(design.i) != len(i):
        raise ValueError("the pair design does not match the rows")
    i, j = design.i, design.j
    weight = np.asarray(weight, dtype=float)
    score = np.asarray(score, dtype=float)
    n = int(n_models)
    x_cov = (np.zeros((len(i), 0)) if covariates is None
             else np.ascontiguousarray(np.asarray(covariates, dtype=float).reshape(len(i), -1)))
    k = x_cov.shape[1]
    battles = float(weight.sum())
    threshold = tolerance * max(battles, 1.0)
    theta = np.zeros(n) if theta0 is None else np.array(theta0, dtype=float)
    theta -= theta.mean()
    beta = np.zeros(k) if beta0 is None else np.array(beta0, dtype=float)

    def log_odds(t, b):
        d = t[i] - t[j]
        return d + x_cov @ b if k else d

    def gradient_at(t, b, d, decay):
        p = _probability(d, decay)
        excess = weight * p - score  # d(-loglik)/d(log-odds) per row
        grad = np.empty(n + k)
        grad[:n] = design.difference(excess) + l2 * t
        if k:
            grad[n:] = x_cov.T @ excess
        return grad, p

    d = log_odds(theta, beta)
    value, decay = _objective_and_decay(d, weight, score)
    value += 0.5 * l2 * float(theta @ theta)
    iterations = 0
    converged = False
    while True:
        grad, p = gradient_at(theta, beta, d, decay)
        curvature = weight * p * (1.0 - p)
        hess = np.zeros((n + k, n + k))
        hess[:n, :n] = strength_hessian(design, curvature, l2)
        if k:
            weighted = x_cov * curvature[:, None]
            cross = design.difference(weighted)
            hess[:n, n:] = cross
            hess[n:, :n] = cross.T
            hess[n:, n:] = x_cov.T @ weighted
        step, singular = _solve_definite(hess, -grad)
        max_gradient = float(np.abs(grad).max(initial=0.0))
        max_step = float(np.abs(step).max(initial=0.0))
        if max_gradient <= threshold and max_step <= step_tolerance:
            converged = True
            # The step is already computed and tiny: taking it squares the remaining error.
            final_theta, final_beta = theta + step[:n], beta + step[n:]
            final_d = log_odds(final_theta, final_beta)
            final_gradient = float(np.abs(gradient_at(final_theta, final_beta, final_d, np.exp(-np.abs(final_d)))[0])
                                   .max(initial=0.0))
            if final_gradient <= max_gradient:
                theta, beta, max_gradient = final_theta, final_beta, final_gradient
            break
        if iterations >= max_iter:
            # The criterion is the gradient; a step that stays above step_tolerance with the
            # gradient already below it moves along a flat direction (collinear covariates).
            converged = max_gradient <= threshold
            break
        slope = float(grad @ step)
        t = 1.0
        accepted = False
        for _ in range(60):
            new_theta = theta + t * step[:n]
            new_beta = beta + t * step[n:]
            new_d = log_odds(new_theta, new_beta)
            new_value, new_decay = _objective_and_decay(new_d, weight, score)
            new_value += 0.5 * l2 * float(new_theta @ new_theta)
            # Armijo sufficient decrease; near the optimum the decrease of a full Newton step falls
            # below rounding of the objective, so a full step that does not increase it is taken.
            if new_value <= value + 1e-4 * t * slope or (t == 1.0 and new_value <= value + 1e-13 * abs(value)):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            converged = max_gradient <= threshold
            break
        theta, beta, d, value, decay = new_theta, new_beta, new_d, new_value, new_decay
        iterations += 1
    if l2 == 0:
        theta = theta - theta.mean()
    fit = LogitFit(
        theta=theta, beta=beta, iterations=iterations, max_gradient=max_gradient, max_step=max_step,
        gradient_threshold=threshold, log_likelihood=(-_objective(log_odds(theta, beta), weight, score)
                                                          if with_log_likelihood else float("nan")),
        l2=float(l2), converged=converged, battles=battles, singular=singular,
    )
    if not converged and raise_on_failure:
        raise ConvergenceError(
            f"Bradley-Terry fit did not converge in {iterations} Newton steps: max |gradient| "
            f"{max_gradient:.3g} (threshold {threshold:.3g}), remaining step {max_step:.3g}"
        )
    return fit


def strength_hessian(design: PairDesign, curvature: np.ndarray, l2: float) -> np.ndarray:
    """The negative log-likelihood's Hessian in the strengths (a weighted graph Laplacian), plus
    ``l2`` on the diagonal, or, without it, pinned along the constant shift."""
    n = design.n
    hessian = design.negative_off_diagonal(curvature)
    diag = design.total(curvature)
    hessian[np.diag_indices(n)] = diag
    if l2 > 0:
        hessian[np.diag_indices(n)] += l2
    else:
        # Pin the constant shift: the gradient has no component along it, so adding
        # c * u u^T (u = ones on theta) makes the system definite without changing the step.
        hessian += max(float(diag.max(initial=0.0)), 1.0) / n
    return hessian


def _solve_definite(matrix: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Newton step, and whether the Hessian was singular (then the least-squares step is used)."""
    # LAPACK's Cholesky solve in one call (the scipy wrappers around it cost as much as the solve
    # at a hundred models); info > 0 means the matrix is not positive definite.
    factor, step, info = lapack.dposv(matrix, rhs, lower=1)
    if info < 0:
        raise ValueError(f"LAPACK dposv rejected argument {-info}")
    if info == 0 and np.isfinite(step).all():
        # A singular matrix can still factorise with a pivot at rounding level; such a pivot
        # (squared, relative to the largest) marks it as singular too.
        pivots = np.diag(factor) ** 2
        if pivots.min(initial=np.inf) > SINGULAR_PIVOT_RATIO * pivots.max(initial=0.0):
            return step, False
    # Semi-definite, e.g. a style feature that is a copy of model identity: the likelihood is
    # flat along some direction; least squares takes the shortest step and the fit says so.
    return np.linalg.lstsq(matrix, rhs, rcond=None)[0], True


def prior_l2(prior_sd: float) -> float:
    if not prior_sd > 0:
        raise ValueError(f"prior_sd must be positive; got {prior_sd}")
    return 1.0 / prior_sd**2


def fit_bradley_terry(
    pairs: ScoredPairs, *, degenerate: str = "regularise", prior_sd: float = DEFAULT_PRIOR_SD,
    tolerance: float = DEFAULT_TOLERANCE, step_tolerance: float = DEFAULT_STEP_TOLERANCE,
    max_iter: int = DEFAULT_MAX_ITER, start: np.ndarray | None = None,
) -> LogitFit:
    """Exact Bradley-Terry strengths (natural units, summing to zero) from aggregated pair counts."""
    if degenerate not in DEGENERATE_OPTIONS:
        raise ValueError(f"degenerate must be one of {', '.join(DEGENERATE_OPTIONS)}; got {degenerate!r}")
    if pairs.battles == 0:
        raise ValueError("no battles to rate (after the tie policy)")
    degeneracy = check_identifiable(pairs)
    l2 = 0.0
    if degeneracy.degenerate:
        if degenerate == "error":
            raise DegenerateDataError(
                degeneracy.describe() + "; collect more votes, or use degenerate='regularise' for a weak prior"
            )
        l2 = prior_l2(prior_sd)
    fit = solve_pairwise_logit(
        pairs.i, pairs.j, pairs.battles_per_pair, pairs.score_i, pairs.n_models, l2=l2,
        tolerance=tolerance, step_tolerance=step_tolerance, max_iter=max_iter, theta0=start,
    )
    return replace(fit, degeneracy=degeneracy)


def log_likelihood(theta: np.ndarray, pairs: ScoredPairs) -> float:
    d = np.asarray(theta)[pairs.i] - np.asarray(theta)[pairs.j]
    return -_objective(d, pairs.battles_per_pair.astype(float), pairs.score_i)


def gradient(theta: np.ndarray, pairs: ScoredPairs) -> np.ndarray:
    """Gradient of the log-likelihood in the strengths (natural units)."""
    theta = np.asarray(theta, dtype=float)
    n = pairs.n_models
    residual = pairs.score_i - pairs.battles_per_pair * expit(theta[pairs.i] - theta[pairs.j])
    return np.bincount(pairs.i, residual, n) - np.bincount(pairs.j, residual, n)
