"""Summary techniques as linear maps from the 2^d game values to d attributions, and their operator norms.

Coalitions are indexed by bitmask (index t = sum_i z_i 2^i, bit i = player i), the order of
:func:`coalitions`. A technique is a matrix W float64[d, 2^d] with phi(u) = W u, where u float[2^d] is the
table of game values. The robustness constant of the technique is

  C(W) = sup_{u != u'} ||W (u - u')||_2 / max_S |u(S) - u'(S)| = sup_{||u||_inf <= 1} ||W u||_2,

the (inf -> 2) operator norm. Derivations (all proved in the docstrings below, checked by brute force in
``tests/test_robustness.py``):

  * ``||W u||_2`` is convex in u, so the sup over the cube [-1, 1]^(2^d) is attained at a vertex: a sign vector.
    Exhaustive search over sign vectors is exact (:func:`exact_norm`), but a maximum of a convex quadratic over
    the cube is NP-hard in general; it is feasible here for up to :data:`MAX_SIGN_GENERATORS` merged columns.
  * At a maximiser u*, with a = W u* / ||W u*||, every column g_j != 0 has u*_j = sign(a . g_j) (else flipping
    u*_j raises ||W u||). So columns that are positive (negative) multiples of each other share (oppose) their
    sign at the optimum, and can be merged into one generator of summed length: exact, and for symmetric
    semivalues (Shapley, Banzhaf: column of ~T = -column of T) it halves the columns. Zero columns drop.
  * Probabilistic value (semivalue with sum_s C(d-1, s) w(s) = 1): row i has weight w(|T|-1) on T containing i
    and -w(|T|) on T without i, so ||W_i||_1 = 2 sum_s C(d-1, s) w(s) = 2. Hence |phi_i(u) - phi_i(u')| <= 2 delta
    for each i and ||.||_2 <= 2 sqrt(d) delta: the paper's closed form 2 sqrt(d) is a valid upper bound for every
    probabilistic value. It is attained by leave-one-out (u(N) = 1, u(N \\ i) = -1 gives phi_i = 2 for all i),
    so it cannot be improved uniformly; and every probabilistic value has C >= 2 (u = the sign pattern of one
    row gives phi_i = 2).
  * Banzhaf: W = 2^-(d-1) S^T with S[T, i] = +1 if i in T else -1. The columns of S are orthogonal with squared
    norm 2^d, so ||W u||_2^2 = 4^-(d-1) 2^d ||P u||^2 <= 4^-(d-1) 2^d 2^d = 4 (P: projection onto span S).
    u = S[:, 0] attains it: C(Banzhaf) = 2 exactly, for every d: the most robust probabilistic value.
  * Mean when included (phi_i = E[u(S) | i in S], S uniform): rows are >= 0 with l1-norm 1, so C <= sqrt(d), and
    u = 1 attains it: C = sqrt(d) exactly. (It is not a difference operator: constant games move it.)
  * Shapley: between 2 (d <= 2: attained) and 2 sqrt(d); computed exactly for d <= 5 and bracketed by a
    certified upper bound (:func:`upper_bound`) and an attained lower bound (:func:`lower_bound`) beyond.

Example:
  >>> from xattr.robustness import operators
  >>> operators.closed_form("banzhaf", 4), round(operators.closed_form("leave_one_out", 4), 3)
  (2.0, 4.0)
  >>> round(operators.exact_norm(operators.matrix("shapley", 3)), 4) <= 2 * 3 ** 0.5
  True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from xattr import _checks

__all__ = ["TECHNIQUES", "MAX_SIGN_GENERATORS", "MAX_MATRIX_PLAYERS", "coalitions", "semivalue_weights", "matrix",
           "merged_generators", "exact_norm", "upper_bound", "lower_bound", "closed_form", "Constant", "constant",
           "attaining_pair"]

TECHNIQUES = ("shapley", "banzhaf", "leave_one_out", "mean_when_included")
MAX_SIGN_GENERATORS = 20
"""Largest number of merged generators :func:`exact_norm` enumerates (2^19 sign vectors, in chunks)."""
MAX_SHIFTED_GENERATORS = 64
"""Most generators for which :func:`upper_bound` optimises the shifted eigenvalue bound (bound (d))."""
MAX_MATRIX_PLAYERS = 14
"""Largest d for which :func:`matrix` builds the dense d x 2^d weight matrix."""


def coalitions(num_players: int) -> np.ndarray:
  """All 2^d coalitions as bool[2^d, d] in bitmask order (row t keeps player i iff bit i of t is set).

  Example:
    >>> coalitions(2).astype(int).tolist()
    [[0, 0], [1, 0], [0, 1], [1, 1]]
  """
  d = _checks.positive_int("num_players", num_players)
  return ((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1).astype(bool)


def semivalue_weights(technique: str, num_players: int) -> np.ndarray:
  """Coalition-size weights w(s), s = 0..d-1, of a semivalue phi_i = sum_{S not containing i} w(|S|) [u(S+i) - u(S)].

  Shapley: w(s) = s! (d-1-s)! / d!; Banzhaf: 2^-(d-1); leave-one-out: w(d-1) = 1, else 0. All are probabilistic
  values: sum_s C(d-1, s) w(s) = 1.

  Example:
    >>> semivalue_weights("shapley", 3).tolist()
    [0.3333333333333333, 0.16666666666666666, 0.3333333333333333]
  """
  d = _checks.positive_int("num_players", num_players)
  if technique == "shapley":
    return np.array([1.0 / (d * math.comb(d - 1, s)) for s in range(d)])
  if technique == "banzhaf":
    return np.full(d, 0.5 ** (d - 1))
  if technique == "leave_one_out":
    return np.eye(d)[d - 1]
  raise ValueError(f"technique must be one of the semivalues ('shapley', 'banzhaf', 'leave_one_out'), "
                   f"got {technique!r}.")


def _check_technique(technique: str) -> str:
  if technique not in TECHNIQUES:
    raise ValueError(f"technique must be one of {TECHNIQUES}, got {technique!r}.")
  return technique


def matrix(technique: str, num_players: int) -> np.ndarray:
  """The weight matrix W float64[d, 2^d] of a technique: phi = W @ (game values in :func:`coalitions` order).

  Example:
    >>> matrix("leave_one_out", 2).tolist()
    [[0.0, 0.0, -1.0, 1.0], [0.0, -1.0, 0.0, 1.0]]
  """
  _check_technique(technique)
  d = _checks.positive_int("num_players", num_players)
  if d > MAX_MATRIX_PLAYERS:
    raise ValueError(f"num_players must be <= {MAX_MATRIX_PLAYERS} for a dense d x 2^d matrix, got {d}.")
  z = coalitions(d).T                                   # [d, 2^d]
  size = z.sum(0)
  if technique == "mean_when_included":
    return z * 0.5 ** (d - 1)
  w = semivalue_weights(technique, d)
  w_in = np.concatenate([[0.0], w])[size]               # T contains i: w(|T| - 1)
  w_out = np.concatenate([w, [0.0]])[size]              # T lacks i:    w(|T|)
  return np.where(z, w_in[None], -w_out[None]) + 0.0          # + 0.0: no negative zeros


def merged_generators(w: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
  """Columns of ``w`` with zero columns dropped and parallel / antiparallel columns summed (module docstring).

  Returns:
    float64[d, m] generators G with sup_{||u||_inf <= 1} ||W u|| = max_{v in {-1, 1}^m} ||G v||.

  Example:
    >>> merged_generators(np.array([[1.0, -2.0, 0.0], [1.0, -2.0, 0.0]])).tolist()
    [[3.0], [3.0]]
  """
  w = np.asarray(w, np.float64)
  if w.ndim != 2:
    raise ValueError(f"w must be a 2-D matrix [d, n], got shape {w.shape}.")
  norms = np.linalg.norm(w, axis=0)
  cols = w[:, norms > tol] / norms[norms > tol]
  lengths = norms[norms > tol]
  # Orient each direction canonically (first non-zero entry positive), then group equal directions.
  lead = np.argmax(np.abs(cols) > 1e-9, axis=0)
  sign = np.sign(cols[lead, np.arange(cols.shape[1])])
  keys = np.round(cols * sign, 9)
  _, inverse = np.unique(keys.T, axis=0, return_inverse=True)
  inverse = inverse.ravel()
  out = np.zeros((w.shape[0], inverse.max() + 1 if inverse.size else 0))
  np.add.at(out.T, inverse, (cols * sign * lengths).T)
  return out


def exact_norm(w: np.ndarray, *, chunk: int = 1 << 14) -> float:
  """sup_{||u||_inf <= 1} ||W u||_2 by exhaustive search over sign vectors of the merged generators.

  Exact (a convex function's max over the cube sits at a vertex; merging is exact, module docstring). The
  first generator's sign is fixed (u and -u give the same norm): 2^(m-1) candidates.

  Raises:
    ValueError: more than :data:`MAX_SIGN_GENERATORS` merged generators.

  Example:
    >>> round(exact_norm(matrix("banzhaf", 3)), 6)
    2.0
  """
  g = merged_generators(w)
  m = g.shape[1]
  if m == 0:
    return 0.0
  if m > MAX_SIGN_GENERATORS:
    raise ValueError(f"w has {m} distinct column directions; exhaustive search handles at most "
                     f"{MAX_SIGN_GENERATORS} (use upper_bound / lower_bound).")
  best = 0.0
  total = 2 ** (m - 1)
  bits = np.arange(m - 1)
  for start in range(0, total, chunk):
    idx = np.arange(start, min(start + chunk, total))
    signs = np.concatenate([np.ones((idx.size, 1)), 1.0 - 2.0 * ((idx[:, None] >> bits) & 1)], axis=1)
    best = max(best, float(np.max(np.sum((signs @ g.T) ** 2, axis=1))))
  return math.sqrt(best)


def upper_bound(w: np.ndarray) -> float:
  """A certified upper bound on sup_{||u||_inf <= 1} ||W u||_2: the least of three valid bounds.

  (a) sqrt(sum_i ||W_i||_1^2): each |(W u)_i| <= ||W_i||_1 (2 sqrt(d) for probabilistic values);
  (b) sqrt(m) sigma_max(G) for the m merged generators G: ||G v|| <= sigma_max ||v||_2 = sigma_max sqrt(m);
  (c) sum_j ||g_j||_2: the triangle inequality;
  (d) the eigenvalue bound with a diagonal shift (the dual of the semidefinite relaxation): for sign vectors v
      and any mu in R^m, ||G v||^2 = v^T (G^T G - diag mu) v + sum(mu) <= m lambda_max(G^T G - diag mu) + sum(mu);
      mu is improved by L-BFGS from 0 (any mu is valid, so the optimiser's accuracy affects tightness only);
      computed for at most :data:`MAX_SHIFTED_GENERATORS` generators (Shapley: d <= 7).

  Example:
    >>> round(upper_bound(matrix("banzhaf", 4)), 6), round(upper_bound(matrix("leave_one_out", 4)), 6)
    (2.0, 4.0)
  """
  w = np.asarray(w, np.float64)
  g = merged_generators(w)
  if g.shape[1] == 0:
    return 0.0
  rows = math.sqrt(float(np.sum(np.abs(w).sum(1) ** 2)))
  spectral = math.sqrt(g.shape[1]) * float(np.linalg.norm(g, 2))
  triangle = float(np.linalg.norm(g, axis=0).sum())
  shifted = _shifted_eigenvalue_bound(g) if g.shape[1] <= MAX_SHIFTED_GENERATORS else math.inf
  return min(rows, spectral, triangle, shifted)


def _shifted_eigenvalue_bound(g: np.ndarray, max_iter: int = 200) -> float:
  import scipy.optimize      # deferred: scipy costs import time that the rest of the module does not need

  gram = g.T @ g
  m = gram.shape[0]

  def bound_and_subgradient(mu: np.ndarray) -> tuple[float, np.ndarray]:
    lam, vec = np.linalg.eigh(gram - np.diag(mu))
    return m * lam[-1] + mu.sum(), 1.0 - m * vec[:, -1] ** 2

  res = scipy.optimize.minimize(bound_and_subgradient, np.zeros(m), jac=True, method="L-BFGS-B",
                                options=dict(maxiter=max_iter))
  value = min(bound_and_subgradient(np.asarray(res.x))[0], bound_and_subgradient(np.zeros(m))[0])
  return math.sqrt(max(value, 0.0))


def lower_bound(w: np.ndarray, *, num_starts: int = 64, num_iters: int = 50, seed: int = 0) -> tuple[float, np.ndarray]:
  """An attained value ||W u||_2 (so a lower bound on the norm) and its sign vector u float[n], by vertex ascent.

  From random sign vectors (and each row's sign pattern), iterate u <- sign(W^T W u) (the optimality condition of
  the module docstring; each step does not lower ||W u||, as for the power method on the cube).

  Example:
    >>> value, u = lower_bound(matrix("leave_one_out", 3))
    >>> round(value, 6) == round(2 * 3 ** 0.5, 6), u.shape
    (True, (8,))
  """
  w = np.asarray(w, np.float64)
  rng = np.random.default_rng(seed)
  aligned = np.sign(w.sum(0, keepdims=True)) + (w.sum(0, keepdims=True) == 0)      # sign(W^T 1)
  starts = np.concatenate([np.sign(w) + (w == 0), aligned, rng.choice([-1.0, 1.0], (num_starts, w.shape[1]))])
  u = starts
  for _ in range(num_iters):
    new = np.sign((u @ w.T) @ w)
    new = np.where(new == 0, u, new)
    if np.array_equal(new, u):
      break
    u = new
  values = np.linalg.norm(u @ w.T, axis=1)
  best = int(np.argmax(values))
  return float(values[best]), u[best]


def closed_form(technique: str, num_players: int) -> float:
  """The closed-form constant where one is proved (module docstring), else the paper's bound 2 sqrt(d).

  Banzhaf: 2 (exact); leave-one-out: 2 sqrt(d) (exact); mean when included: sqrt(d) (exact); Shapley:
  2 sqrt(d) (a valid upper bound, not attained for d >= 2).

  Example:
    >>> closed_form("mean_when_included", 9), closed_form("shapley", 4)
    (3.0, 4.0)
  """
  _check_technique(technique)
  d = _checks.positive_int("num_players", num_players)
  if technique == "banzhaf":
    return 2.0
  if technique == "mean_when_included":
    return math.sqrt(d)
  return 2.0 * math.sqrt(d)


class Constant(NamedTuple):
  """The robustness constant of a technique at d players.

  Attributes:
    value: the constant the bounds use: ``exact`` when known, else ``upper`` (always valid).
    exact: the exact value (closed form or exhaustive search), or None when neither applies.
    upper: certified upper bound (min of :func:`upper_bound` and the closed form).
    lower: attained lower bound (:func:`lower_bound`, or the exact value).
    paper: the paper's closed form 2 sqrt(d) for probabilistic values (sqrt(d) for mean when included).
  """

  value: float
  exact: float | None
  upper: float
  lower: float
  paper: float


def constant(technique: str, num_players: int) -> Constant:
  """The robustness constant C with ||phi(u) - phi(u')||_2 <= C max_S |u(S) - u'(S)|.

  Exact for Banzhaf, leave-one-out and mean when included (closed forms) and, via exhaustive search, for any
  technique whose merged generators number at most :data:`MAX_SIGN_GENERATORS` (Shapley: d <= 5); otherwise the
  certified upper bound.

  Example:
    >>> c = constant("shapley", 4)
    >>> c.lower <= c.value == c.exact <= c.upper <= c.paper
    True
  """
  _check_technique(technique)
  d = _checks.positive_int("num_players", num_players)
  paper = closed_form(technique, d) if technique == "mean_when_included" else 2.0 * math.sqrt(d)
  if technique != "shapley":
    value = closed_form(technique, d)
    return Constant(value, value, value, value, paper)
  w = matrix(technique, d)
  upper = min(upper_bound(w), paper)
  exact = exact_norm(w) if merged_generators(w).shape[1] <= MAX_SIGN_GENERATORS else None
  lower = exact if exact is not None else lower_bound(w)[0]
  return Constant(exact if exact is not None else upper, exact, upper, lower, paper)


def attaining_pair(technique: str, num_players: int) -> tuple[np.ndarray, np.ndarray]:
  """Two games u, u' float64[2^d] with max_S |u - u'| = 1 whose attributions differ by the best value found.

  For leave-one-out (and Banzhaf) this attains the exact constant (tightness); otherwise the lower bound.

  Example:
    >>> u, v = attaining_pair("leave_one_out", 3)
    >>> w = matrix("leave_one_out", 3)
    >>> round(float(np.linalg.norm(w @ (u - v))), 6) == round(2 * 3 ** 0.5, 6), float(np.abs(u - v).max())
    (True, 1.0)
  """
  w = matrix(technique, num_players)
  _, u = lower_bound(w)
  return 0.5 * u, -0.5 * u
