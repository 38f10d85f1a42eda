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
  """Exact Banzhaf values by enumerating all 2^d coalitions (d <= 20); float64 when ``jax_enable_x64`` is on.

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
  phi, game_ok = _loop.dispatch(_enumerate.exact_semivalue, game, num_players=d,
                                weights=tuple(np.full(d, 0.5 ** (d - 1)).tolist()), batch_size=batch_size)
  _loop.check_result("banzhaf.exact", phi, game_ok)
  return phi


def msr(game: Game, num_players: int, key: jax.Array, *, num_samples: int | None = None, batch_size: int = 512,
        threshold: float = 0.01, max_samples: int = 2 ** 17) -> Estimate:
  """Maximum-sample-reuse Banzhaf estimate from Bernoulli(1/2) coalitions.

  Eager calls with the same game structure and sizes reuse one compiled program.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).
    key: PRNG key.
    num_samples: fixed number of coalitions; None: until max(std)/range(values) < threshold (or max_samples).
    batch_size: coalitions per game call.
    threshold: convergence threshold.
    max_samples: cap in convergence mode.

  Returns:
    :class:`Estimate`; std = sqrt(Var(v | z_i=1)/n_i1 + Var(v | z_i=0)/n_i0), inf (and converged False) while a
    player has fewer than 2 samples on either side; num_evals = samples (no grand/null).

  Example:
    >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 0.0])
    >>> est = msr(v, 3, jax.random.key(0), num_samples=4096)
    >>> bool((jnp.abs(est.values - jnp.array([1.0, 2.0, 0.0])) < 4 * est.std).all())
    True
  """
  d = _checks.positive_int("num_players", num_players)
  _checks.prng_key("key", key)
  _loop.batch_plan(num_samples, batch_size, max_samples, 1, threshold)
  est, ok = _loop.dispatch(_msr, game, key, num_players=d, num_samples=num_samples,
                           batch_size=batch_size, threshold=float(threshold), max_samples=max_samples)
  _loop.check_result("banzhaf.msr", est, ok)
  return est


def _msr(game, key, *, num_players, num_samples, batch_size, threshold, max_samples):
  d = num_players
  _, _, spec = _loop.batch_plan(num_samples, batch_size, max_samples, 1, threshold)
  k, scalar = _loop.output_shape(game, d)
  state = dict(inside=_player_moments(d, k), outside=_player_moments(d, k), ok=jnp.array(True))

  def update(st, i, rows):
    z = masks_lib.bernoulli(jax.random.fold_in(key, i), d, rows)
    y = _loop.call_game(game, z)                                         # [rows, k]
    zf = z.astype(jnp.float32)
    # Per-player moments over the rows with z_i = 1 (resp. 0): vmap the shared update over players.
    upd = jax.vmap(lambda s, wp: _loop.moments_update(s, y, wp), in_axes=(0, 1))
    return dict(inside=upd(st["inside"], zf), outside=upd(st["outside"], 1 - zf),
                ok=st["ok"] & jnp.all(jnp.isfinite(y)))

  def finish(st):
    values = st["inside"].mean - st["outside"].mean
    var = _per_row_var(st["inside"]) + _per_row_var(st["outside"])
    estimable = (jnp.minimum(st["inside"].count, st["outside"].count) >= 2)[:, None]
    return values, _loop.std_or_inf(jnp.sqrt(var), estimable)

  state, values, std, converged = _loop.run_batches(update, finish, state, spec, threshold)
  num_evals = (state["inside"].count[0] + state["outside"].count[0]).astype(jnp.int32)
  squeeze = (lambda x: x[:, 0]) if scalar else (lambda x: x)
  return Estimate(squeeze(values), squeeze(std), num_evals, converged), state["ok"]


def _player_moments(d: int, k: int) -> _loop.Moments:
  """Per-player moments of a [k] statistic: count [d], mean [d, k], m2 [d, k]."""
  return _loop.Moments(jnp.zeros(d), jnp.zeros((d, k)), jnp.zeros((d, k)))


def _per_row_var(m: _loop.Moments) -> jax.Array:
  n = m.count[:, None]
  return m.m2 / jnp.maximum((n - 1.0) * n, 1.0)
