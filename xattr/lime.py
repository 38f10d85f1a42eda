"""LIME with binary interpretable features: a kernel-weighted linear surrogate of the game.

Coalitions are drawn with uniformly random size (the original instance, all players kept, is always included),
weighted by pi(z) = exp(-D(z)^2 / width^2) with the cosine distance to the all-ones vector,
D(z) = 1 - sqrt(|z| / d), and fitted by weighted least squares with an intercept (optionally ridge-penalised,
intercept excluded). Reference: Ribeiro et al., KDD 2016.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import lime
  >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 3.0]) + 5.0
  >>> lime.lime(v, 3, jax.random.key(0), num_samples=64).values.round(4).tolist()
  [1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from xattr import _checks, _loop, linalg
from xattr import masks as masks_lib
from xattr.estimate import Estimate

__all__ = ["lime", "lime_kernel"]


def lime_kernel(sizes: jax.Array, num_players: int, kernel_width: float = 0.5) -> jax.Array:
  """LIME sample weights from coalition sizes: exp(-(1 - sqrt(|z| / d))^2 / kernel_width^2).

  Example:
    >>> lime_kernel(jnp.array([4]), 4).tolist()
    [1.0]
  """
  distance = 1.0 - jnp.sqrt(sizes / num_players)
  return jnp.exp(-(distance ** 2) / kernel_width ** 2)


def lime(game: Callable[[jax.Array], jax.Array], num_players: int, key: jax.Array, *, num_samples: int = 1000,
         kernel_width: float = 0.5, ridge: float = 0.0, batch_size: int = 512, threshold: float = 0.01) -> Estimate:
  """LIME coefficients with heteroskedasticity-robust (HC0 sandwich) standard errors.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key.
    num_samples: coalitions (>= d + 1, the first one is the full coalition).
    kernel_width: width of the exponential kernel on the cosine distance.
    ridge: L2 penalty on the coefficients (LIME's library default is 1.0; 0 gives plain weighted least squares).
    batch_size: coalitions per game call.
    threshold: sets ``converged`` from max(std) / range(values).

  Returns:
    :class:`Estimate`; values are the linear coefficients (no efficiency constraint).
  """
  d = _checks.positive_int("num_players", num_players)
  n = _checks.positive_int("num_samples", num_samples)
  if n < d + 1:
    raise ValueError(f"num_samples={n} is too few for a solvable system: LIME fits d + 1 = {d + 1} coefficients "
                     f"(intercept included) and needs num_samples >= {d + 1}.")
  if not kernel_width > 0:
    raise ValueError(f"kernel_width must be > 0, got {kernel_width}.")
  _checks.prng_key("key", key)
  est, ok = _loop.dispatch(_lime, game, key, num_players=d, num_samples=n, kernel_width=float(kernel_width),
                           ridge=float(ridge), batch_size=_checks.positive_int("batch_size", batch_size),
                           threshold=float(threshold))
  _loop.check_result("lime", est, ok)
  return est


def _lime(game, key, *, num_players, num_samples, kernel_width, ridge, batch_size, threshold):
  d, n = num_players, num_samples
  z = masks_lib.uniform_cardinality(key, d, n).at[0].set(True)
  y = _loop.evaluate_chunked(game, z, batch_size)                                          # [n, k]
  weights = lime_kernel(z.sum(1), d, kernel_width)
  x = jnp.concatenate([jnp.ones((n, 1)), z.astype(jnp.float32)], axis=1)                   # [n, d + 1]
  penalty = ridge * jnp.diag(jnp.ones(d + 1).at[0].set(0.0))
  bread = linalg.inv_psd(x.T @ (x * weights[:, None]) + penalty)
  beta = bread @ (x.T @ (y * weights[:, None]))                                             # [d + 1, k]
  resid = y - x @ beta
  meat = jnp.einsum("ni,nk,nj->kij", x * weights[:, None], resid ** 2, x * weights[:, None])
  var = jnp.einsum("ai,kij,aj->ak", bread, meat, bread)
  values, std = beta[1:], jnp.sqrt(jnp.maximum(var[1:], 0.0))
  converged = _loop.converged_flag(values, std, threshold)
  _, scalar = _loop.output_shape(game, d)
  est = Estimate(values[:, 0] if scalar else values, std[:, 0] if scalar else std, jnp.asarray(n, jnp.int32),
                 converged)
  return est, jnp.all(jnp.isfinite(y))
