"""Game tables, exact attributions from them, and the game-perturbation bounds of each removal.

Every bound here is on delta = max_S |u(S) - u'(S)|, the game change that the summary's constant C
(:mod:`xattr.robustness.operators`) turns into ||phi(u) - phi(u')||_2 <= C delta. Derivations:

* **Input perturbation, baseline** u_x(S) = f(x_S, r_~S) and **marginal** u_x(S) = E_b f(x_S, b_~S): for an
  L-Lipschitz f, |u_x(S) - u_x'(S)| <= L ||x_S - x'_S|| <= L ||x - x'|| (the same b on both sides), so
  delta <= L ||x - x'|| (:func:`input_bound`). Grouped players: the same, with S the kept features.
* **Input perturbation, conditional** u_x(S) = E[f(x_S, X_~S) | X_S = x_S]. Two bounds, both valid:
  (TV) |u_x(S) - u_x'(S)| <= L ||x_S - x'_S|| + (sup f - inf f) TV(p(X_~S | x_S), p(X_~S | x'_S)) (the paper's form;
  insert E[f(x'_S, X_~S) | x_S] and use |E_p g - E_q g| <= range(g) TV(p, q));
  (coupling) for a Gaussian X the two conditionals are N(m(x_S), Sigma_c) and N(m(x'_S), Sigma_c) with the same
  covariance, so with the same noise Z, X_~S = m(x_S) + chol(Sigma_c) Z: |u_x(S) - u_x'(S)| <= L ||A_S (x - x')||, where
  A_S x = (x_S, m(x_S) - const) is linear (:class:`GaussianConditional`). The coupling bound needs no bounded
  range and also holds exactly for the Monte Carlo game of :func:`conditional_game` (common noise rows), since it
  holds for each noise row. For equal covariances TV = 2 Phi(Delta / 2) - 1 with Delta the Mahalanobis distance of
  the means under Sigma_c (:func:`conditional_tv`).
* **Surrogate removal** u_x(S) = s(x * m_S, m_S): a network of the kept inputs, so delta <= L_s ||x - x'|| with L_s
  the surrogate's Lipschitz constant in x (its first layer restricted to the x half).
* **Model perturbation** f -> g: baseline/marginal evaluate f at hybrid points (x_S, r_~S) / (x_S, b_~S), off the data
  distribution included: delta <= max over those points of |f - g| <= sup_{||z|| <= R} |f(z) - g(z)| with R =
  :func:`hybrid_radius`, bounded for MLPs by :func:`mlp_difference_bound`. Conditional removal averages f over
  the conditional distribution only: delta <= E[|f - g| | x_S] <= sup over the data distribution (for the Monte
  Carlo game: the max over its noise rows), so a g that equals f on the data leaves it unchanged.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import games
  >>> from xattr.robustness import bounds, operators
  >>> f = lambda b: b @ jnp.array([1.0, 2.0])
  >>> table = bounds.game_table(games.baseline(f, jnp.array([1.0, 1.0]), jnp.zeros(2)), 2)
  >>> table.tolist(), bounds.attributions(table, operators.matrix("shapley", 2)).tolist()
  ([0.0, 1.0, 2.0, 3.0], [1.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm as jnorm

from xattr import _checks, games
from xattr.robustness import operators

__all__ = ["game_table", "attributions", "input_bound", "GaussianConditional", "gaussian_conditional",
           "conditional_game", "conditional_shift", "conditional_tv", "conditional_input_bound", "conditional_gain",
           "hybrid_radius", "mlp_difference_bound"]


def game_table(game: games.Game, num_players: int) -> jax.Array:
  """The values float32[2^d] of a scalar game on every coalition, in :func:`operators.coalitions` order.

  Differentiable and jittable (one game call on all 2^d masks).

  Example:
    >>> game_table(lambda m: m.sum(-1).astype(jnp.float32), 2).tolist()
    [0.0, 1.0, 1.0, 2.0]
  """
  masks = jnp.asarray(operators.coalitions(num_players))
  out = games.evaluate(game, masks)
  if out.ndim != 1:
    raise ValueError(f"game must be scalar (float[n]); got values of shape {tuple(out.shape)}. Use games.select.")
  return out


def attributions(table: jax.Array, w: np.ndarray | jax.Array) -> jax.Array:
  """phi = W u for a game table u float[..., 2^d] and a technique matrix W [d, 2^d] (or a stack [t, d, 2^d])."""
  return jnp.einsum("...n,dn->...d", table, jnp.asarray(w, jnp.float32)) if jnp.ndim(w) == 2 else \
      jnp.einsum("...n,tdn->...td", table, jnp.asarray(w, jnp.float32))


def input_bound(lipschitz: jax.Array | float, dx: jax.Array) -> jax.Array:
  """Bound L ||x - x'||_2 on the baseline / marginal / surrogate game change for an L-Lipschitz model.

  Example:
    >>> float(input_bound(2.0, jnp.array([3.0, 4.0])))
    10.0
  """
  return jnp.asarray(lipschitz, jnp.float32) * jnp.linalg.norm(jnp.ravel(dx))


class GaussianConditional(NamedTuple):
  """Exact conditionals of X ~ N(mean, cov) given the kept features of each coalition (bitmask order).

  For coalition t (feature mask K, removed R): a conditional draw is ``a[t] @ x + c[t] + chol[t] @ z``, z ~ N(0, I).

  Attributes:
    a: float32[2^d, f, f]: identity on K; rows R: Sigma_RK Sigma_KK^-1 on columns K.
    c: float32[2^d, f]: mu_R - Sigma_RK Sigma_KK^-1 mu_K on R, 0 on K.
    chol: float32[2^d, f, f]: Cholesky factor of Sigma_c = Sigma_RR - Sigma_RK Sigma_KK^-1 Sigma_KR on R x R.
    inv_chol: float32[2^d, f, f]: its inverse (for Mahalanobis distances), zero outside R x R.
    kept: bool[2^d, f]: the kept features K.
  """

  a: jax.Array
  c: jax.Array
  chol: jax.Array
  inv_chol: jax.Array
  kept: jax.Array


def _conditional_parts(mean: np.ndarray, cov: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
  f = mean.size
  k, r = np.flatnonzero(keep), np.flatnonzero(~keep)
  a, c, chol, inv = np.zeros((f, f)), np.zeros(f), np.zeros((f, f)), np.zeros((f, f))
  a[k, k] = 1.0
  if r.size == 0:
    return a, c, chol, inv
  gain = np.linalg.solve(cov[np.ix_(k, k)], cov[np.ix_(k, r)]).T if k.size else np.zeros((r.size, 0))
  a[np.ix_(r, k)] = gain
  c[r] = mean[r] - gain @ mean[k]
  cond = cov[np.ix_(r, r)] - gain @ cov[np.ix_(k, r)]
  low = np.linalg.cholesky(0.5 * (cond + cond.T) + 1e-9 * np.eye(r.size))
  chol[np.ix_(r, r)] = low
  inv[np.ix_(r, r)] = np.linalg.inv(low)
  return a, c, chol, inv


def gaussian_conditional(mean: np.ndarray, cov: np.ndarray, groups: np.ndarray | None = None) -> GaussianConditional:
  """Precomputes :class:`GaussianConditional` for every coalition of the players (features, or ``groups``).

  Args:
    mean: float[f]; cov: float[f, f] positive definite.
    groups: optional bool[d, f] player -> features matrix; None: one player per feature.

  Example:
    >>> cond = gaussian_conditional(np.zeros(2), np.array([[1.0, 0.5], [0.5, 1.0]]))
    >>> cond.a[1].tolist()                     # keep feature 0: E[X_1 | x_0] = 0.5 x_0
    [[1.0, 0.0], [0.5, 0.0]]
  """
  mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
  f = mean.size
  if cov.shape != (f, f):
    raise ValueError(f"cov must be [{f}, {f}] for a mean of {f} features, got {cov.shape}.")
  groups = np.eye(f, dtype=bool) if groups is None else np.asarray(groups, bool)
  if groups.ndim != 2 or groups.shape[1] != f:
    raise ValueError(f"groups must be bool[num_players, {f}], got shape {groups.shape}.")
  kept = (operators.coalitions(groups.shape[0]).astype(np.float64) @ groups) > 0
  parts = [_conditional_parts(mean, cov, keep) for keep in kept]
  stack = lambda i: jnp.asarray(np.stack([p[i] for p in parts]), jnp.float32)
  return GaussianConditional(stack(0), stack(1), stack(2), stack(3), jnp.asarray(kept))


def _bitmask(mask: jax.Array) -> jax.Array:
  return (mask.astype(jnp.int32) << jnp.arange(mask.shape[1], dtype=jnp.int32)).sum(-1)


def conditional_game(model_fn: Callable[[jax.Array], jax.Array], x: jax.Array, cond: GaussianConditional,
                     noise: jax.Array) -> games.Game:
  """Monte Carlo conditional game u(S) = mean_j f(a_S x + c_S + chol_S z_j) over fixed noise rows z float[m, f].

  The same rows for every coalition and input (common random numbers): the coupling bound of the module docstring
  then holds for this estimate exactly, and the model-perturbation change is at most the max of |f - g| over the
  points it evaluates.

  Example:
    >>> cond = gaussian_conditional(np.zeros(2), np.array([[1.0, 0.9], [0.9, 1.0]]))
    >>> v = conditional_game(lambda b: b[:, 1], jnp.array([1.0, 0.0]), cond, jnp.zeros((4, 2)))
    >>> [round(t, 4) for t in v(jnp.array([[True, False], [False, False]])).tolist()]
    [0.9, 0.0]
  """
  x = jnp.asarray(x, jnp.float32)
  noise = jnp.asarray(noise, jnp.float32)

  def game(mask: jax.Array) -> jax.Array:
    _checks.mask_batch("mask", mask)
    t = _bitmask(mask)
    mean = jnp.einsum("nfg,g->nf", cond.a[t], x) + cond.c[t]                   # [n, f]
    z = mean[:, None] + jnp.einsum("nfg,mg->nmf", cond.chol[t], noise)        # [n, m, f]
    out = model_fn(z.reshape(-1, x.shape[0]))
    return out.reshape(mask.shape[0], noise.shape[0]).mean(1)

  return game


def conditional_shift(cond: GaussianConditional, dx: jax.Array) -> jax.Array:
  """||a_S (x - x')||_2 per coalition, float[2^d]: how far the coupled conditional draws move (coupling bound / L)."""
  return jnp.linalg.norm(jnp.einsum("tfg,g->tf", cond.a, jnp.asarray(dx, jnp.float32)), axis=-1)


def conditional_tv(cond: GaussianConditional, dx: jax.Array) -> jax.Array:
  """TV(p(X_~S | x_S), p(X_~S | x'_S)) per coalition, float[2^d]: 2 Phi(Delta / 2) - 1 (equal covariances)."""
  shift = jnp.einsum("tfg,g->tf", cond.a, jnp.asarray(dx, jnp.float32))
  delta = jnp.linalg.norm(jnp.einsum("tfg,tg->tf", cond.inv_chol, shift), axis=-1)
  return 2.0 * jnorm.cdf(delta / 2.0) - 1.0


def conditional_input_bound(lipschitz: jax.Array | float, cond: GaussianConditional, dx: jax.Array, *,
                            output_range: float | None = None) -> dict[str, jax.Array]:
  """Both conditional input bounds on delta: ``coupling`` = L max_S ||a_S dx|| and (with ``output_range``, the
  model output's sup - inf) ``tv`` = max_S [L ||dx_S|| + range TV_S] (module docstring).

  Example:
    >>> cond = gaussian_conditional(np.zeros(2), np.eye(2))
    >>> round(float(conditional_input_bound(2.0, cond, jnp.array([3.0, 4.0]))["coupling"]), 4)
    10.0
  """
  dx = jnp.asarray(dx, jnp.float32)
  lip = jnp.asarray(lipschitz, jnp.float32)
  out = {"coupling": lip * conditional_shift(cond, dx).max()}
  if output_range is not None:
    kept_norm = jnp.linalg.norm(jnp.where(cond.kept, dx, 0.0), axis=-1)
    out["tv"] = (lip * kept_norm + output_range * conditional_tv(cond, dx)).max()
  return out


def conditional_gain(cond: GaussianConditional) -> jax.Array:
  """max_S sigma_max(a_S): the coupling bound over an eps-ball is L eps times this (>= 1)."""
  return jnp.linalg.svd(cond.a, compute_uv=False)[:, 0].max()


def hybrid_radius(x: jax.Array, others: jax.Array) -> jax.Array:
  """Radius R of a ball holding every hybrid point (x_S, o_~S) for the rows o of ``others`` (reference or
  background): max_o sqrt(sum_i max(x_i^2, o_i^2)).

  Example:
    >>> float(hybrid_radius(jnp.array([3.0, 0.0]), jnp.array([[0.0, 4.0]])))
    5.0
  """
  x = jnp.ravel(jnp.asarray(x, jnp.float32))
  others = jnp.asarray(others, jnp.float32).reshape(-1, x.size)
  return jnp.sqrt(jnp.maximum(x ** 2, others ** 2).sum(-1)).max()


def mlp_difference_bound(kernels_a: Sequence[jax.Array], biases_a: Sequence[jax.Array],
                         kernels_b: Sequence[jax.Array], biases_b: Sequence[jax.Array], radius: jax.Array | float, *,
                         activation_lipschitz: float = 1.0) -> jax.Array:
  """Certified sup_{||z|| <= R} ||f_a(z) - f_b(z)||_2 for two MLPs of the same shape (z @ W + b layers, the
  activation rho-Lipschitz with rho(0) = 0 between them, none after the last).

  With h_0 = h'_0 = z and e_l = ||h_l - h'_l||, n_l >= ||h'_l||: e_l <= rho (||W_l|| e_(l-1) + ||W_l - W'_l|| n_(l-1)
  + ||b_l - b'_l||) and n_l <= rho (||W'_l|| n_(l-1) + ||b'_l||) (|rho(t)| <= rho |t|), with e_0 = 0, n_0 = R and
  rho = 1 for the last layer. Spectral norms by SVD.

  Example:
    >>> k = [jnp.eye(2)]
    >>> float(mlp_difference_bound(k, [jnp.zeros(2)], [2 * jnp.eye(2)], [jnp.zeros(2)], 3.0))
    3.0
  """
  if not len(kernels_a) == len(biases_a) == len(kernels_b) == len(biases_b) >= 1:
    raise ValueError("kernels_a, biases_a, kernels_b and biases_b must list the same number (>= 1) of layers.")
  sn = lambda w: jnp.linalg.svd(jnp.asarray(w, jnp.float32), compute_uv=False)[0]
  e, n = jnp.float32(0.0), jnp.asarray(radius, jnp.float32)
  last = len(kernels_a) - 1
  for i, (wa, ba, wb, bb) in enumerate(zip(kernels_a, biases_a, kernels_b, biases_b)):
    rho = 1.0 if i == last else activation_lipschitz
    e = rho * (sn(wa) * e + sn(jnp.asarray(wa) - jnp.asarray(wb)) * n + jnp.linalg.norm(jnp.asarray(ba) - jnp.asarray(bb)))
    n = rho * (sn(wb) * n + jnp.linalg.norm(jnp.asarray(bb)))
  return e
