"""Banzhaf values: exact enumeration and the maximum-sample-reuse (MSR) estimator.

phi_i = E_{S ⊆ N \\ i uniformly}[v(S ∪ i) - v(S)] = E[v(z) | z_i = 1] - E[v(z) | z_i = 0] for z ~ Bernoulli(1/2)^d.
MSR (Wang & Jia, 2023) estimates both conditional means from the *same* samples, so every sample informs
every player.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr import banzhaf
  >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)       # unanimity of 3 players
  >>> banzhaf.exact(v, 3).tolist()
  [0.25, 0.25, 0.25]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, _enumerate, _loop
from xattr import masks as masks_lib
from xattr.estimate import Estimate

Game = Callable[[jax.Array], jax.Array]

__all__ = ["exact", "msr"]


def exact(game: Game, num_players: int, *, batch_size: int = 4096) -> jax.Array:
  """Exact Banzhaf values by enumerating all 2^d coalitions (d <= 20).

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    batch_size: coalitions per game call.

  Returns:
    float[d] or float[d, k].

  Example:
    >>> exact(lambda m: m.astype(jnp.float32) @ jnp.array([1.0, -2.0]), 2).tolist()
    [1.0, -2.0]
  """
  d = _enumerate.check_size(num_players)
  batch_size = _checks.positive_int("batch_size", batch_size)
  phi, game_ok = _enumerate.semivalue(game, d, np.full(d, 0.5 ** (d - 1)), batch_size)
  _, _, scalar = _loop.grand_and_null(game, d)
  _loop.check_result("banzhaf.exact", phi, game_ok)
  return phi[:, 0] if scalar else phi


def msr(game: Game, num_players: int, key: jax.Array, *, num_samples: int | None = None, batch_size: int = 512,
        threshold: float = 0.01, max_samples: int = 2 ** 17) -> Estimate:
  """Maximum-sample-reuse Banzhaf estimate from Bernoulli(1/2) coalitions.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key.
    num_samples: fixed number of coalitions; None: until max(std)/range(values) < threshold (or max_samples).
    batch_size: coalitions per game call.
    threshold: convergence threshold.
    max_samples: cap in convergence mode.

  Returns:
    :class:`Estimate`; std = sqrt(Var(v | z_i=1)/n_i1 + Var(v | z_i=0)/n_i0); num_evals = samples (no grand/null).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 0.0])
    >>> est = msr(v, 3, jax.random.key(0), num_samples=4096)
    >>> bool((jnp.abs(est.values - jnp.array([1.0, 2.0, 0.0])) < 4 * est.std).all())
    True
  """
  d = _checks.positive_int("num_players", num_players)
  bs, budget, spec = _loop.batch_plan(num_samples, batch_size, max_samples, 1, threshold)
  grand, _, scalar = _loop.grand_and_null(game, d)
  k = grand.shape[0]
  state = dict(inside=_player_moments(d, k), outside=_player_moments(d, k), ok=jnp.array(True))

  def update(st, i):
    z = masks_lib.bernoulli(jax.random.fold_in(key, i), d, bs)
    y = _loop.call_game(game, z)                                         # [bs, k]
    w = _loop.valid_rows(i, bs, budget)
    zf = z.astype(jnp.float32)
    # Per-player moments over the rows with z_i = 1 (resp. 0): vmap the shared update over players.
    upd = jax.vmap(lambda s, wp: _loop.moments_update(s, y, wp), in_axes=(0, 1))
    return dict(inside=upd(st["inside"], zf * w[:, None]), outside=upd(st["outside"], (1 - zf) * w[:, None]),
                ok=st["ok"] & jnp.all(jnp.isfinite(y)))

  def finish(st):
    values = st["inside"].mean - st["outside"].mean
    var = _per_row_var(st["inside"]) + _per_row_var(st["outside"])
    return values, jnp.sqrt(var)

  state, values, std, converged = _loop.run_batches(update, finish, state, spec, threshold)
  num_evals = (state["inside"].count[0] + state["outside"].count[0]).astype(jnp.int32)
  est = Estimate(values[:, 0] if scalar else values, std[:, 0] if scalar else std, num_evals, converged)
  _loop.check_result("banzhaf.msr", est, state["ok"])
  return est


def _player_moments(d: int, k: int) -> _loop.Moments:
  """Per-player moments of a [k] statistic: count [d], mean [d, k], m2 [d, k]."""
  return _loop.Moments(jnp.zeros(d), jnp.zeros((d, k)), jnp.zeros((d, k)))


def _per_row_var(m: _loop.Moments) -> jax.Array:
  n = m.count[:, None]
  return m.m2 / jnp.maximum((n - 1.0) * n, 1.0)
