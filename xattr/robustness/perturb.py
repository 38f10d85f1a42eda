"""Measured attribution changes under input perturbations: random (Gaussian direction) and worst case (PGD).

For one input x, a removal's table function ``x -> u_x float[2^d]`` (:func:`xattr.robustness.bounds.game_table`
of a game) and the technique matrices W float[t, d, 2^d], :func:`input_changes` returns, for every radius eps,

  * ``gaussian``: ||W (u_(x + delta) - u_x)||_2 with delta = eps xi / ||xi||, xi ~ N(0, I) (one draw per eps);
  * ``pgd``: the largest ||W_t (u_(x + delta) - u_x)||_2 found by projected gradient ascent over ||delta||_2 <= eps
    (normalised gradient steps of 2.5 eps / steps, projection onto the ball, started from a random point of the
    sphere of radius eps / 2; the best iterate counts, and never less than the Gaussian draw), one ascent per
    (eps, technique).

Everything is jittable and vmappable over inputs (the randomness comes from ``key``), so
:func:`xattr.parallel.explain_batch` runs it over the devices with per-input keys.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import games
  >>> from xattr.robustness import bounds, operators, perturb
  >>> w = jnp.asarray(operators.matrix("shapley", 2))[None]
  >>> table = lambda x: bounds.game_table(games.baseline(lambda b: b @ jnp.array([1.0, 1.0]), x, jnp.zeros(2)), 2)
  >>> out = perturb.input_changes(table, w, jnp.ones(2), jax.random.key(0), jnp.array([0.5]), num_steps=5)
  >>> [round(float(out[k][0, 0]), 4) for k in ("gaussian", "pgd")]       # a linear model: every change is eps
  [0.5, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["sphere", "change", "pgd", "input_changes"]

TableFn = Callable[[jax.Array], jax.Array]


def sphere(key: jax.Array, shape: tuple[int, ...], radius: jax.Array) -> jax.Array:
  """A uniformly random direction of ``shape`` scaled to 2-norm ``radius``."""
  xi = jax.random.normal(key, shape)
  return radius * xi / jnp.maximum(jnp.linalg.norm(xi.ravel()), 1e-12)


def change(table_fn: TableFn, w: jax.Array, x: jax.Array, base: jax.Array, delta: jax.Array) -> jax.Array:
  """||W (u_(x + delta) - u_x)||_2 for one technique matrix W [d, 2^d] (or a stack [t, d, 2^d]: float[t])."""
  diff = table_fn(x + delta) - base
  return jnp.linalg.norm(jnp.einsum("...dn,n->...d", w, diff), axis=-1)


def pgd(table_fn: TableFn, w: jax.Array, x: jax.Array, base: jax.Array, eps: jax.Array, key: jax.Array, *,
        num_steps: int) -> jax.Array:
  """The largest change found by projected gradient ascent over the eps-ball (module docstring)."""
  objective = lambda d: change(table_fn, w, x, base, d)
  step = 2.5 * eps / num_steps

  def body(carry, _):
    delta, best = carry
    value, g = jax.value_and_grad(objective)(delta)
    g = jnp.nan_to_num(g)
    delta = delta + step * g / jnp.maximum(jnp.linalg.norm(g.ravel()), 1e-12)
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(jnp.linalg.norm(delta.ravel()), 1e-12))
    return (delta, jnp.maximum(best, value)), None

  start = sphere(key, x.shape, eps / 2)
  (delta, best), _ = jax.lax.scan(body, (start, jnp.float32(0.0)), None, length=num_steps)
  return jnp.maximum(best, objective(delta))


def input_changes(table_fn: TableFn, w: jax.Array, x: jax.Array, key: jax.Array, eps: jax.Array, *,
                  num_steps: int) -> dict[str, jax.Array]:
  """``gaussian`` and ``pgd`` changes float[E, t] for the radii ``eps`` float[E] and techniques ``w`` [t, d, 2^d]."""
  w = jnp.asarray(w, jnp.float32)
  eps = jnp.asarray(eps, jnp.float32)
  base = table_fn(x)
  k_gauss, k_pgd = jax.random.split(key)
  gauss_keys = jax.random.split(k_gauss, eps.shape[0])
  gaussian = jax.vmap(lambda e, k: change(table_fn, w, x, base, sphere(k, x.shape, e)))(eps, gauss_keys)
  pgd_keys = jax.random.split(k_pgd, (eps.shape[0], w.shape[0]))
  per_technique = lambda e, keys: jax.vmap(lambda wt, k: pgd(table_fn, wt, x, base, e, k, num_steps=num_steps))(
      w, keys)
  worst = jax.lax.map(lambda a: per_technique(*a), (eps, pgd_keys))
  return {"gaussian": gaussian, "pgd": jnp.maximum(worst, gaussian)}
