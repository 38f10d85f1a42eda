"""Odd Walsh regression: the fit behind :func:`xattr.shapley.odd_kernel_shap` and :func:`xattr.banzhaf.kernel_banzhaf`.

A paired sample (z, 1 - z) observes the odd part of a game exactly, v_o(x) = (v(z) - v(1 - z)) / 2 with x = 2z - 1
in {-1, 1}^d, and v_o is a sum of odd Walsh functions x_T = prod_{i in T} x_i. Both Shapley and Banzhaf values
are linear in its coefficients b_T: the Banzhaf value of i is 2 b_{i}; the Shapley value of i is
sum_{T odd, i in T} 2 b_T / |T|. :class:`OddFit` regresses v_o on the d first-order functions (generalised least
squares, no penalty) plus the third-order (and optionally fifth-order) functions as a Gaussian-process part whose
kernel needs no C(d, 3) feature matrix: with per-player prior scales s it is e_3(s * x * x') / e_3(s), an
elementary symmetric polynomial computed from power sums. :func:`heredity_scales` sets s from a first-order fit,
so interactions among the players with large main effects get the larger prior (several times lower error than
equal scales on smooth models). The kernel part soaks up variance the first-order fit would otherwise take as
noise; its ridge strength is chosen by the closed-form leave-one-out error, and the std of either value is the
closed-form delete-one jackknife.

Example:
  >>> import numpy as np
  >>> x = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], size=(40, 5)), jnp.float32)
  >>> y = (x @ jnp.arange(1.0, 6.0))[:, None]                   # a first-order odd game: b = 1..5
  >>> fit = OddFit(x, y, jnp.full(40, 1 / 40), 5)
  >>> values, std = fit.banzhaf(jnp.float32(1.0), jnp.ones(40, bool), 40)
  >>> np.round(np.asarray(values[:, 0]), 4).tolist()
  [2.0, 4.0, 6.0, 8.0, 10.0]
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import linalg

__all__ = ["FIFTH_ORDER_PRIOR", "HEREDITY_FLOOR", "HEREDITY_POWER", "PRIORS", "RIDGE_GRID", "ChosenFit",
           "OddFit", "check_prior", "check_ridge", "fit", "heredity_scales", "host_eigh", "odd_kernel"]

# Ridge strengths (noise variance relative to the higher-order prior) tried by leave-one-out. Not below 1e-2:
# smaller ridges won the leave-one-out score on piecewise-constant games (a random forest's) while giving 10x the
# error and a jackknife std 25x too small (tools/bench/estimators.py, 512 rows).
RIDGE_GRID = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
# The heredity prior (see heredity_scales) and the fifth-order terms' prior weight, the estimators' defaults:
# chosen on the estimators benchmark's games (tools/bench/estimators.py; the power 1-2, floors 0.05-0.2 and fifth
# weights 0.1-0.3 land within 10% of each other there, a power of 3 overfits the forest).
HEREDITY_POWER = 2.0
HEREDITY_FLOOR = 0.2
FIFTH_ORDER_PRIOR = 0.1


def check_ridge(ridge: float | None) -> float | None:
  """A fixed ridge strength as a float (None: chosen by leave-one-out); raises unless positive and finite."""
  if ridge is not None and not (np.isfinite(ridge) and ridge > 0):
    raise ValueError(f"ridge must be a positive number (or None to choose it by leave-one-out), got {ridge}.")
  return None if ridge is None else float(ridge)


PRIORS = ("heredity", "flat")


def check_prior(prior: str) -> str:
  """``prior`` if it names a prior of :func:`fit` ("heredity" or "flat"), else a ValueError naming the choices."""
  if prior not in PRIORS:
    raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")
  return prior


def fit(x: jax.Array, y: jax.Array, w: jax.Array, d: int, prior: str = "heredity",
        interactions: bool = True, single_index: bool = True) -> "OddFit | ChosenFit":
  """The estimators' odd Walsh fit under a named prior for the higher-order part.

  "heredity" (the default): the best, by leave-one-out error, of three fits: third- and fifth-order terms (weight
  :data:`FIFTH_ORDER_PRIOR`) with prior variance prod_{i in T} s_i from :func:`heredity_scales`; the same with the
  two :func:`index_features` of :func:`single_index_pilot` as extra regressors (``single_index``; they carry the
  bulk of the higher-order terms of a link over an additive score, e.g. a saturating classifier, where the first
  two leave it as noise); and the "flat" fit. The heredity prior is several times more accurate on smooth models;
  the choice keeps games whose interactions sit among players with small main effects (where that prior is
  wrong) as accurate as "flat". The first two share one eigendecomposition (same kernel).
  "flat": third-order terms only, all alike (the kernel e_3(x * x') / C(d, 3)).

  Example:
    >>> import numpy as np
    >>> x = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], size=(40, 6)), jnp.float32)
    >>> y = (x @ jnp.arange(1.0, 7.0) + 2.0 * x[:, 4] * x[:, 5] * x[:, 3])[:, None]
    >>> truth = jnp.array([2.0, 4.0, 6.0, 28 / 3, 34 / 3, 40 / 3])       # 2 b_i, plus 2 * 2 / 3 to players 3-5
    >>> def error(prior):
    ...   f = fit(x, y, jnp.full(40, 1 / 40), 6, prior)
    ...   values, _ = f.shapley(f.ridge(40), jnp.ones(40, bool), 40)
    ...   return round(float(jnp.abs(values[:, 0] - truth).max()), 1)
    >>> error("heredity"), error("flat")
    (0.2, 1.8)
  """
  flat = OddFit(x, y, w, d, interactions=interactions)
  if check_prior(prior) == "flat" or not interactions:
    return flat
  heredity = OddFit(x, y, w, d, scales=heredity_scales(x, y, w, d), fifth=FIFTH_ORDER_PRIOR)
  if not single_index:
    return ChosenFit((heredity, flat))
  return ChosenFit((heredity.with_index(single_index_pilot(x, y, w, d)), heredity, flat))


class ChosenFit:
  """Several :class:`OddFit` candidates (different priors); the one with the lowest leave-one-out error is used.

  Same interface as :class:`OddFit`: :meth:`ridge` returns the choice (each candidate's ridge and the winner),
  which :meth:`shapley` / :meth:`banzhaf` take in place of a ridge.
  """

  def __init__(self, fits: tuple["OddFit", ...]):
    self.fits = fits

  def ridge(self, rows: int, fixed: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(each candidate's ridge, the index of the candidate with the smallest leave-one-out score)."""
    lams = jnp.stack([f.ridge(rows, fixed) for f in self.fits])
    scores = jnp.stack([f.loo_score(lam, rows) for f, lam in zip(self.fits, lams)])
    return lams, jnp.argmin(jnp.where(jnp.isfinite(scores), scores, jnp.inf))

  def _chosen(self, method: str, choice, sampled, n_pairs):
    lams, best = choice
    outs = [getattr(f, method)(lam, sampled, n_pairs) for f, lam in zip(self.fits, lams)]
    return tuple(jnp.stack(parts)[best] for parts in zip(*outs))

  def shapley(self, choice, sampled: jax.Array, n_pairs):
    """(Shapley values, jackknife std) of the chosen candidate."""
    return self._chosen("shapley", choice, sampled, n_pairs)

  def banzhaf(self, choice, sampled: jax.Array, n_pairs):
    """(Banzhaf values, jackknife std) of the chosen candidate."""
    return self._chosen("banzhaf", choice, sampled, n_pairs)


def _numpy_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  eig, q = np.linalg.eigh(np.asarray(a, np.float64))
  return eig.astype(a.dtype), q.astype(a.dtype)


def host_eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigendecomposition of a symmetric matrix on the host (numpy, float64), one matrix at a time under vmap.

  Why not ``jnp.linalg.eigh``: batched LAPACK custom calls can stall XLA:CPU's thread pool when several run at
  once (seen with an estimator vmapped over inputs on 4 CPU devices; see :mod:`xattr.linalg`). The matrix here
  depends only on the sampled coalitions, never on the game's values, so no derivative flows through it.

  Example:
    >>> eig, q = host_eigh(jnp.array([[2.0, 0.0], [0.0, 1.0]]))
    >>> eig.tolist()
    [1.0, 2.0]
  """
  shapes = (jax.ShapeDtypeStruct(a.shape[-1:], a.dtype), jax.ShapeDtypeStruct(a.shape, a.dtype))
  return jax.pure_callback(_numpy_eigh, shapes, jax.lax.stop_gradient(a), vmap_method="sequential")


def _elementary(p: list, order: int) -> list:
  """[e_0, ..., e_order] from the power sums p[1..order] (Newton's identities; p[0] unused)."""
  e = [1.0]
  for k in range(1, order + 1):
    e.append(sum((-1) ** (i - 1) * e[k - i] * p[i] for i in range(1, k + 1)) / k)
  return e


def _scaled_elementary(u_odd: Callable[[int], jax.Array], scales: jax.Array, order: int) -> list:
  """e_k(u) for u_i = s_i t_i with t_i = +-1: even power sums are sum(s^k) whatever the signs, odd ones are
  ``u_odd(k)`` = sum_i s_i^k t_i (a matmul for a kernel, a row sum for a single row)."""
  p = [None] + [u_odd(k) if k % 2 else jnp.sum(scales ** k) for k in range(1, order + 1)]
  return _elementary(p, order)


def heredity_scales(x: jax.Array, y: jax.Array, w: jax.Array, d: int, power: float = HEREDITY_POWER,
                    floor: float = HEREDITY_FLOOR) -> jax.Array:
  """float[d]: the per-player prior scales s_i = (b_i^2 / mean b^2)^(power / 2) + floor of a heredity prior.

  b is the unpenalised weighted first-order fit of y on x (columns normalised per output, then averaged). A
  higher-order Walsh term T then gets prior variance prod_{i in T} s_i: interactions among the players with large
  main effects are expected to be large (the strong-heredity principle of factorial designs), which is what
  smooth models (a link over a near-additive score, an MLP) produce. Falls back to equal scales when the first-order
  fit is not finite or identically zero. No derivative flows through the scales (they set the prior, like the
  ridge).

  Example:
    >>> import numpy as np
    >>> x = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], size=(40, 3)), jnp.float32)
    >>> s = heredity_scales(x, (x @ jnp.array([3.0, 1.0, 0.0]))[:, None], jnp.ones(40), 3)
    >>> [round(float(v), 2) for v in s]                # 9 / (10 / 3) + 0.2, 1 / (10 / 3) + 0.2, 0 + 0.2
    [2.9, 0.5, 0.2]
  """
  x, y, w = jax.lax.stop_gradient((x, y, w))
  b = _wls(x, y, w)                                                                     # [d, k]
  rel = b ** 2 / (jnp.mean(b ** 2, 0, keepdims=True) + 1e-30)
  s = jnp.mean(rel, 1) ** (power / 2.0) + floor
  ok = jnp.all(jnp.isfinite(s)) & jnp.any(jnp.abs(b) > 0)
  return jnp.where(ok, s, jnp.ones_like(s))


def _index_orders(d: int) -> tuple[int, ...]:
  """The orders of the single-index features: 3 and 5 (only 3 below five players, where e_5 vanishes)."""
  return (3, 5) if d >= 5 else (3,)


def index_features(x: jax.Array, beta: jax.Array) -> jax.Array:
  """float[n, m]: e_k(beta * x_s) / sqrt(e_k(beta^2)) for k in (3, 5): one feature per order, unit mean square.

  A single-index game v_o(x) = g(sum_i a_i x_i) (a link over an additive score: logistic regression, a saturating
  network) has Walsh coefficients b_T close to c_|T| prod_{i in T} a_i, and its first-order ones are close to
  c_1 a_i. So with beta the first-order coefficients, sum_{|T|=k} prod_{i in T} beta_i x_i = e_k(beta * x) carries
  all the order-k terms with one unknown coefficient: two regressors instead of C(d, 3) + C(d, 5).

  Example:
    >>> x = jnp.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    >>> index_features(x, jnp.array([1.0, 2.0, 3.0])).tolist()     # e_3 = prod(beta * x) = +-6, over sqrt(36)
    [[1.0], [-1.0]]
  """
  orders = _index_orders(beta.shape[0])
  e = _elementary([None] + [jnp.sum((beta * x) ** k, -1) for k in range(1, max(orders) + 1)], max(orders))
  norm = _elementary([None] + [jnp.sum(beta ** (2 * k)) for k in range(1, max(orders) + 1)], max(orders))
  return jnp.stack([e[k] / jnp.sqrt(norm[k] + 1e-30) for k in orders], -1)


def index_shares(beta: jax.Array) -> jax.Array:
  """float[d, m]: each player's Shapley share of a unit coefficient on each :func:`index_features` column.

  Term T of e_k(beta * x) has coefficient prod_{j in T} beta_j and gives 2 / k of it to each of its k players:
  player i gets (2 / k) beta_i e_{k-1}(beta without i), normalised like the feature.

  Example:
    >>> index_shares(jnp.array([1.0, 2.0, 3.0])).tolist()        # one term, 6 / sqrt(36), 2 / 3 of it each
    [[0.6666666865348816], [0.6666666865348816], [0.6666666865348816]]
  """
  orders = _index_orders(beta.shape[0])
  top = max(orders)
  e = _elementary([None] + [jnp.sum(beta ** k) for k in range(1, top)], top - 1)
  norm = _elementary([None] + [jnp.sum(beta ** (2 * k)) for k in range(1, top + 1)], top)
  without = [jnp.ones_like(beta)]                       # e_k(beta without i) = e_k(beta) - beta_i e_{k-1}(...)
  for k in range(1, top):
    without.append(e[k] - beta * without[k - 1])
  return jnp.stack([(2.0 / k) * beta * without[k - 1] / jnp.sqrt(norm[k] + 1e-30) for k in orders], -1)


INDEX_ITERATIONS = 3
"""Refits of the single-index pilot (first-order coefficients re-estimated beside its own features)."""


def _wls(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
  """Weighted least squares with a trace-relative jitter (keeps rank-deficient designs finite)."""
  gram = x.T @ (w[:, None] * x)
  p = gram.shape[0]
  return linalg.solve_psd(gram + 1e-6 * jnp.trace(gram) / p * jnp.eye(p, dtype=gram.dtype), x.T @ (w[:, None] * y))


def single_index_pilot(x: jax.Array, y: jax.Array, w: jax.Array, d: int,
                       iterations: int = INDEX_ITERATIONS) -> jax.Array:
  """float[d, k]: first-order coefficients for :func:`index_features`, one column per output.

  The weighted least-squares first-order fit, then ``iterations`` refits with its own single-index features as
  extra regressors (the higher-order energy otherwise leaks into the first-order fit as noise). A few refits on
  purpose, not a converged nonlinear fit: the leave-one-out choice and the jackknife treat the features as fixed,
  and a pilot fitted to convergence (damped Gauss-Newton, tried) made both optimistic (std calibration 0.35 on the
  benchmark's hardest game at 128 rows, against 1.16 with three refits, and a larger error). Falls back to
  ones (the symmetric features e_k(x)) where the fit is not finite or identically zero. No derivative flows
  through it: it shapes the design, like the heredity scales shape the prior.

  Example:
    >>> import numpy as np
    >>> x = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], size=(64, 6)), jnp.float32)
    >>> a = jnp.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    >>> beta = single_index_pilot(x, jnp.tanh(x @ a)[:, None], jnp.ones(64), 6)
    >>> bool(np.corrcoef(np.asarray(beta[:, 0]), np.asarray(a))[0, 1] > 0.99)
    True
  """
  x, y, w = jax.lax.stop_gradient((x, y, w))

  def refit(beta, y1):                                         # one output: beta [d], y1 [n]
    design = jnp.concatenate([x, index_features(x, beta)], 1)
    return _wls(design, y1[:, None], w)[:d, 0]

  beta = _wls(x, y, w)                                         # [d, k]
  for _ in range(iterations):
    beta = jax.vmap(refit, in_axes=(1, 1), out_axes=1)(beta, y)
  ok = jnp.all(jnp.isfinite(beta), 0) & jnp.any(jnp.abs(beta) > 0, 0)
  return jnp.where(ok[None, :], beta, jnp.ones_like(beta))


def odd_kernel(x: jax.Array, x2: jax.Array, scales: jax.Array, fifth: float = 0.0) -> jax.Array:
  """float[n, m]: the prior covariance of the third- (and fifth-) order Walsh part between rows of x and x2.

  sum_{|T|=3} prod_{i in T} s_i x_i x2_i / e_3(s), plus ``fifth`` times the same over |T| = 5 normalised by e_5(s):
  elementary symmetric polynomials of s * x * x2, from power sums (matmuls), so the cost does not grow with
  C(d, 3) or C(d, 5). With s = 1 the third-order part is e_3(x * x2) / C(d, 3), a function of x . x2 only.

  Example:
    >>> x = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]])
    >>> odd_kernel(x, x, jnp.ones(4)).tolist()                 # e_3 of (1, 1, -1, -1) = -2, over C(4, 3) = 4
    [[1.0, 0.0], [0.0, 1.0]]
  """
  order = 5 if fifth else 3
  e = _scaled_elementary(lambda k: (x * scales ** k) @ x2.T, scales, order)
  norm = _scaled_elementary(lambda k: jnp.sum(scales ** k), scales, order)
  out = e[3] / norm[3]
  return out + fifth * e[5] / norm[5] if fifth else out


def _shapley_shares(x: jax.Array, scales: jax.Array, fifth: float) -> jax.Array:
  """float[n, d]: d phi_i / d a_s for the kernel coefficients a of :func:`odd_kernel` (rows s of x).

  Term T holds prior weight prod_{j in T} s_j x_sj and gives 2 / |T| of its coefficient to each of its players, so
  row s gives player i (2 / |T|) v_i e_{|T|-1}(v without i), v = s * x_s, normalised like the kernel.
  """
  order = 5 if fifth else 3
  v = x * scales
  e = _scaled_elementary(lambda k: jnp.sum(x * scales ** k, 1, keepdims=True), scales, order - 1)
  norm = _scaled_elementary(lambda k: jnp.sum(scales ** k), scales, order)
  without = [jnp.ones_like(v)]                              # e_k(v without i) = e_k(v) - v_i e_{k-1}(v without i)
  for k in range(1, order):
    without.append(e[k] - v * without[k - 1])
  g = (2.0 / 3.0) * v * without[2] / norm[3]
  return g + fifth * (2.0 / 5.0) * v * without[4] / norm[5] if fifth else g


class OddFit:
  """Weighted first-order regression plus a higher-order odd Walsh kernel part, for every ridge strength at once.

  With x in {-1, 1}^{n x d}, weights w and ridge lam: y = x b + f + e, f ~ GP(0, K), K = :func:`odd_kernel`
  (third order, optionally fifth, each term's prior variance prod_{i in T} s_i), e ~ N(0, lam D),
  D = diag(1 / (w n)). One eigendecomposition of D^-1/2 K D^-1/2 gives C^-1 = (K + lam D)^-1 for every lam, hence
  b (generalised least squares), the kernel coefficients a = P y, the leave-one-out residuals a_s / P_ss and the
  linear map from y to the values (for the jackknife) in O(n^2 d) each. ``interactions=False`` drops the kernel
  part (K = 0): b is then weighted least squares and lam has no effect.

  Args:
    x: float[n, d] rows in {-1, 1}.
    y: float[n, k] targets (odd parts of the game's values).
    w: float[n] row weights (relative).
    d: players (static).
    interactions: include the kernel part.
    scales: float[d] per-player prior scales s (None: all 1, every term alike); see :func:`heredity_scales`.
    fifth: prior weight of the fifth-order terms relative to the third-order ones (0: third order only).
  """

  def __init__(self, x: jax.Array, y: jax.Array, w: jax.Array, d: int, interactions: bool = True,
               scales: jax.Array | None = None, fifth: float = 0.0):
    self.x, self.y, self.w, self.d = x, y, w, d
    self.interactions = interactions
    self.sq = jnp.sqrt(w * x.shape[0])                                # D^-1/2
    scales = jnp.ones((d,), x.dtype) if scales is None else jax.lax.stop_gradient(scales).astype(x.dtype)
    fifth = float(fifth) if d >= 5 else 0.0
    if interactions:
      kernel = odd_kernel(x, x, scales, fifth)
      self.eig, self.q = host_eigh(kernel * self.sq[:, None] * self.sq[None, :])
      self.eig = jnp.maximum(self.eig, 0.0)
    self.g = _shapley_shares(x, scales, fifth)

  def _solver(self, lam):
    if not self.interactions:
      scale = self.sq ** 2 / lam
      return (lambda v: scale[:, None] * v), scale
    inv = 1.0 / (self.eig + lam)
    ci = lambda v: self.sq[:, None] * (self.q @ (inv[:, None] * (self.q.T @ (self.sq[:, None] * v))))
    return ci, (self.sq ** 2) * ((self.q ** 2) @ inv)

  def with_index(self, pilot: jax.Array) -> "OddFit":
    """The same fit (same kernel and eigendecomposition) with :func:`index_features` of ``pilot`` (float[d, k],
    one column per output, e.g. :func:`single_index_pilot`) as extra unpenalised regressors."""
    out = copy.copy(self)
    pilot = jax.lax.stop_gradient(pilot).astype(self.x.dtype)
    out.u = jax.vmap(lambda beta: index_features(self.x, beta), in_axes=1, out_axes=2)(pilot)        # [n, m, k]
    out.r = jax.vmap(index_shares, in_axes=1, out_axes=2)(pilot)                                     # [d, m, k]
    return out

  u = None
  r = None

  def _gls(self, lam):
    """GLS with every ridge's solver: (ci, ci_x, a_inv, b, alpha, p_diag). With index features the design differs
    per output, so ci_x [k, n, p], a_inv [k, p, p], p_diag [n, k]; b is [p, k] either way (first d rows: x)."""
    ci, diag_ci = self._solver(lam)
    if self.u is None:
      ci_x, ci_y = ci(self.x), ci(self.y)
      a_inv = linalg.inv_psd(self.x.T @ ci_x)
      b = a_inv @ (self.x.T @ ci_y)
      alpha = ci_y - ci_x @ b
      p_diag = diag_ci - jnp.sum((ci_x @ a_inv) * ci_x, axis=1)
      return ci, ci_x, a_inv, b, alpha, p_diag[:, None]

    def one(u, y):                                             # one output: u [n, m], y [n]
      design = jnp.concatenate([self.x, u], 1)
      ci_x = ci(design)
      a_inv = linalg.inv_psd(design.T @ ci_x)
      b = a_inv @ (ci_x.T @ y)
      alpha = ci(y[:, None])[:, 0] - ci_x @ b
      return ci_x, a_inv, b, alpha, diag_ci - jnp.sum((ci_x @ a_inv) * ci_x, axis=1)

    ci_x, a_inv, b, alpha, p_diag = jax.vmap(one, in_axes=(2, 1), out_axes=(0, 0, 1, 1, 1))(self.u, self.y)
    return ci, ci_x, a_inv, b, alpha, p_diag

  def loo_score(self, lam, rows: int):
    """Weighted leave-one-out squared error over the first ``rows`` rows, each output normalised."""
    _, _, _, _, alpha, p_diag = self._gls(lam)
    loo = alpha[:rows] / p_diag[:rows]
    w = self.w[:rows]
    scale = jnp.sum(w[:, None] * self.y[:rows] ** 2, 0) + 1e-30
    return jnp.sum(jnp.sum(w[:, None] * loo ** 2, 0) / scale)

  def ridge(self, rows: int, fixed: float | None = None) -> jax.Array:
    """``fixed`` if given, else the ridge of :data:`RIDGE_GRID` with the smallest :meth:`loo_score` over the first
    ``rows`` rows (1.0 without interactions)."""
    if fixed is not None:
      return jnp.asarray(fixed, jnp.float32)
    if not self.interactions:
      return jnp.float32(1.0)
    grid = jnp.asarray(RIDGE_GRID, jnp.float32)
    scores = jax.lax.map(lambda lam: self.loo_score(lam, rows), grid)
    return grid[jnp.argmin(jnp.where(jnp.isfinite(scores), scores, jnp.inf))]

  @staticmethod
  def _jackknife(lmap, alpha, p_diag, sampled, n_pairs):
    """Delete-one jackknife std over the ``sampled`` rows: deleting row s moves the values by lmap[..., s] (map
    [d, n], or [k, d, n] per output) times its leave-one-out residual."""
    loo = alpha / p_diag                                                                    # [n, k]
    per_row = lmap.T[:, :, None] if lmap.ndim == 2 else jnp.transpose(lmap, (2, 1, 0))     # [n, d, 1 or k]
    delta = per_row * loo[:, None, :]                                                       # [n, d, k]
    m = jnp.maximum(n_pairs, 1)
    mean = jnp.sum(jnp.where(sampled[:, None, None], delta, 0.0), 0) / m
    var = (m - 1) / m * jnp.sum(jnp.where(sampled[:, None, None], (delta - mean) ** 2, 0.0), 0)
    return jnp.sqrt(jnp.maximum(var, 0.0))

  def shapley(self, lam, sampled: jax.Array, n_pairs):
    """(Shapley values [d, k], jackknife std [d, k]) at ridge lam: 2 b_i + the higher-order terms' shares."""
    ci, ci_x, a_inv, b, alpha, p_diag = self._gls(lam)
    ci_g = ci(self.g)
    if self.u is None:
      values = 2.0 * b + self.g.T @ alpha
      # phi = L y with L = 2 A^-1 (C^-1 x)^T + G^T P.
      lmap = 2.0 * a_inv @ ci_x.T + ci_g.T - (self.g.T @ ci_x) @ a_inv @ ci_x.T          # [d, n]
      return values, self._jackknife(lmap, alpha, p_diag, sampled, n_pairs)
    d = self.d
    # Per output: the coefficients map to values through R = [2 I | r] (first order, then the index features).
    rmat = jnp.concatenate([jnp.broadcast_to(2.0 * jnp.eye(d, dtype=b.dtype)[:, :, None], (d, d, b.shape[1])),
                            self.r], 1)                                                     # [d, p, k]
    values = jnp.einsum("dpk,pk->dk", rmat, b) + self.g.T @ alpha
    coef_map = a_inv @ jnp.transpose(ci_x, (0, 2, 1))                                       # [k, p, n]
    lmap = (jnp.einsum("dpk,kpn->kdn", rmat, coef_map) + ci_g.T[None]
            - jnp.einsum("dn,knp,kpm->kdm", self.g.T, ci_x, coef_map))                    # [k, d, n]
    return values, self._jackknife(lmap, alpha, p_diag, sampled, n_pairs)

  def banzhaf(self, lam, sampled: jax.Array, n_pairs):
    """(Banzhaf values [d, k], jackknife std [d, k]) at ridge lam: 2 b_i (higher odd terms average out)."""
    _, ci_x, a_inv, b, alpha, p_diag = self._gls(lam)
    if self.u is None:
      lmap = 2.0 * a_inv @ ci_x.T                                                           # [d, n]
    else:
      lmap = 2.0 * (a_inv @ jnp.transpose(ci_x, (0, 2, 1)))[:, :self.d]                     # [k, d, n]
    return 2.0 * b[:self.d], self._jackknife(lmap, alpha, p_diag, sampled, n_pairs)
