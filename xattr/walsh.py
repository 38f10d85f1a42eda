"""Odd Walsh regression: the fit behind :func:`xattr.shapley.odd_kernel_shap` and :func:`xattr.banzhaf.kernel_banzhaf`.

A paired sample (z, 1 - z) observes the odd part of a game exactly, v_o(x) = (v(z) - v(1 - z)) / 2 with x = 2z - 1
in {-1, 1}^d, and v_o is a sum of odd Walsh functions x_T = prod_{i in T} x_i. Both Shapley and Banzhaf values
are linear in its coefficients b_T: the Banzhaf value of i is 2 b_{i}; the Shapley value of i is
sum_{T odd, i in T} 2 b_T / |T|. :class:`OddFit` regresses v_o on the d first-order functions (generalised least
squares, no penalty) plus every third-order function as a Gaussian-process part whose kernel
sum_{|T|=3} x_T x'_T = e_3(x * x') depends only on x . x' (no C(d, 3) feature matrix). The third-order part
soaks up variance the first-order fit would otherwise take as noise; its ridge strength is chosen by the
closed-form leave-one-out error, and the std of either value is the closed-form delete-one jackknife.

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

from math import comb

import jax
import jax.numpy as jnp
import numpy as np

from xattr import linalg

__all__ = ["RIDGE_GRID", "OddFit", "check_ridge", "host_eigh"]

# Ridge strengths (noise variance relative to the third-order prior) tried by leave-one-out.
RIDGE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def check_ridge(ridge: float | None) -> float | None:
  """A fixed ridge strength as a float (None: chosen by leave-one-out); raises unless positive and finite."""
  if ridge is not None and not (np.isfinite(ridge) and ridge > 0):
    raise ValueError(f"ridge must be a positive number (or None to choose it by leave-one-out), got {ridge}.")
  return None if ridge is None else float(ridge)


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


def third_order_kernel(x: jax.Array, d: int) -> jax.Array:
  """float[n, n]: sum over the C(d, 3) third-order Walsh functions of x_T x'_T, divided by C(d, 3).

  With s = x . x' for +-1 vectors, e_3(x * x') = (s^3 - (3d - 2) s) / 6.
  """
  s = x @ x.T
  return (s ** 3 - (3 * d - 2) * s) / (6.0 * comb(d, 3))


class OddFit:
  """Weighted first-order regression plus a third-order Walsh kernel part, for every ridge strength at once.

  With x in {-1, 1}^{n x d}, weights w and ridge lam: y = x b + f + e, f ~ GP(0, K), K = e_3(x x'^T) / C(d, 3),
  e ~ N(0, lam D), D = diag(1 / (w n)). One eigendecomposition of D^-1/2 K D^-1/2 gives C^-1 = (K + lam D)^-1 for
  every lam, hence b (generalised least squares), the kernel coefficients a = P y, the leave-one-out residuals
  a_s / P_ss and the linear map from y to the values (for the jackknife) in O(n^2 d) each. ``interactions=False``
  drops the kernel part (K = 0): b is then weighted least squares and lam has no effect.

  Args:
    x: float[n, d] rows in {-1, 1}.
    y: float[n, k] targets (odd parts of the game's values).
    w: float[n] row weights (relative).
    d: players (static).
    interactions: include the third-order kernel part.
  """

  def __init__(self, x: jax.Array, y: jax.Array, w: jax.Array, d: int, interactions: bool = True):
    self.x, self.y, self.w, self.d = x, y, w, d
    self.interactions = interactions
    self.sq = jnp.sqrt(w * x.shape[0])                                # D^-1/2
    if interactions:
      kernel = third_order_kernel(x, d)
      self.eig, self.q = host_eigh(kernel * self.sq[:, None] * self.sq[None, :])
      self.eig = jnp.maximum(self.eig, 0.0)
    t = x.sum(1, keepdims=True) - x                                   # sum of the other players' x
    # d phi_i / d a_s: each third-order term T containing i gives 2/3 of its coefficient, summed over T.
    self.g = (2.0 / 3.0) * x * (t ** 2 - (d - 1)) / 2.0 / comb(d, 3)

  def _solver(self, lam):
    if not self.interactions:
      scale = self.sq ** 2 / lam
      return (lambda v: scale[:, None] * v), scale
    inv = 1.0 / (self.eig + lam)
    ci = lambda v: self.sq[:, None] * (self.q @ (inv[:, None] * (self.q.T @ (self.sq[:, None] * v))))
    return ci, (self.sq ** 2) * ((self.q ** 2) @ inv)

  def _gls(self, lam):
    ci, diag_ci = self._solver(lam)
    ci_x, ci_y = ci(self.x), ci(self.y)
    a_inv = linalg.inv_psd(self.x.T @ ci_x)
    b = a_inv @ (self.x.T @ ci_y)
    alpha = ci_y - ci_x @ b
    p_diag = diag_ci - jnp.sum((ci_x @ a_inv) * ci_x, axis=1)
    return ci, ci_x, a_inv, b, alpha, p_diag

  def loo_score(self, lam, rows: int):
    """Weighted leave-one-out squared error over the first ``rows`` rows, each output normalised."""
    _, _, _, _, alpha, p_diag = self._gls(lam)
    loo = alpha[:rows] / p_diag[:rows, None]
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
    """Delete-one jackknife std over the ``sampled`` rows: deleting row s moves the values by lmap[:, s] times its
    leave-one-out residual."""
    loo = alpha / p_diag[:, None]                                                           # [n, k]
    delta = lmap.T[:, :, None] * loo[:, None, :]                                            # [n, d, k]
    m = jnp.maximum(n_pairs, 1)
    mean = jnp.sum(jnp.where(sampled[:, None, None], delta, 0.0), 0) / m
    var = (m - 1) / m * jnp.sum(jnp.where(sampled[:, None, None], (delta - mean) ** 2, 0.0), 0)
    return jnp.sqrt(jnp.maximum(var, 0.0))

  def shapley(self, lam, sampled: jax.Array, n_pairs):
    """(Shapley values [d, k], jackknife std [d, k]) at ridge lam: 2 b_i + the third-order terms' shares."""
    ci, ci_x, a_inv, b, alpha, p_diag = self._gls(lam)
    values = 2.0 * b + self.g.T @ alpha
    # phi = L y with L = 2 A^-1 (C^-1 x)^T + G^T P.
    lmap = 2.0 * a_inv @ ci_x.T + ci(self.g).T - (self.g.T @ ci_x) @ a_inv @ ci_x.T          # [d, n]
    return values, self._jackknife(lmap, alpha, p_diag, sampled, n_pairs)

  def banzhaf(self, lam, sampled: jax.Array, n_pairs):
    """(Banzhaf values [d, k], jackknife std [d, k]) at ridge lam: 2 b_i (higher odd terms average out)."""
    _, ci_x, a_inv, b, alpha, p_diag = self._gls(lam)
    lmap = 2.0 * a_inv @ ci_x.T                                                             # [d, n]
    return 2.0 * b, self._jackknife(lmap, alpha, p_diag, sampled, n_pairs)
