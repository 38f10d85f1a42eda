"""Exact semivalues by enumerating all 2^d coalitions in chunks.

A semivalue is phi_i = sum_{S ∌ i} w(|S|) [v(S ∪ i) - v(S)]. Regrouped over coalitions T this is
phi_i = sum_{T ∋ i} w(|T| - 1) v(T) - sum_{T ∌ i} w(|T|) v(T), a weighted sum of each coalition's value, so
one pass over the coalitions (never materialised all at once) gives every player's value.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xattr import _checks, _loop

MAX_EXACT_PLAYERS = 20
"""Largest d for exact enumeration: 2^20 ≈ 1M coalitions (times the background size for marginal games)."""


def check_size(num_players: int) -> int:
  d = _checks.positive_int("num_players", num_players)
  if d > MAX_EXACT_PLAYERS:
    raise ValueError(f"num_players={d} is too large for exact enumeration (2^{d} = {2 ** d:,} coalitions); the "
                     f"limit is {MAX_EXACT_PLAYERS}. Use kernel_shap / permutation (or banzhaf.msr) instead, or "
                     f"group features into at most {MAX_EXACT_PLAYERS} players (games.grouped).")
  return d


def float_dtype():
  """float64 when ``jax_enable_x64`` is on, else float32: exact enumeration computes in the widest float."""
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def exact_semivalue(game: Callable[[jax.Array], jax.Array], *, num_players: int, weights: tuple[float, ...],
                    batch_size: int) -> tuple[jax.Array, jax.Array]:
  """The traced body of the exact estimators: (values float[d] or [d, k], game-ok flag)."""
  phi, game_ok = semivalue(game, num_players, np.asarray(weights), batch_size)
  _, scalar = _loop.output_shape(game, num_players)
  return (phi[:, 0] if scalar else phi), game_ok


def semivalue(game: Callable[[jax.Array], jax.Array], num_players: int, weights: np.ndarray, batch_size: int
              ) -> jax.Array:
  """Exact semivalue with coalition-size weights w(s), s = 0..d-1; returns float[d, k] and game-ok flag.

  Accumulates in float64 when ``jax_enable_x64`` is on (float32 otherwise).
  """
  d = num_players
  dtype = float_dtype()
  total = 2 ** d
  chunk = min(total, 1 << int(np.log2(max(batch_size, 1))))
  w = np.asarray(weights, np.float64)
  w_in = np.concatenate([[0.0], w])        # T ∋ i: weight w(|T| - 1), |T| = 1..d
  w_out = np.concatenate([w, [0.0]])       # T ∌ i: weight w(|T|),     |T| = 0..d-1
  bits = jnp.arange(d, dtype=jnp.uint32)

  def chunk_contribution(start):
    index = start + jnp.arange(chunk, dtype=jnp.uint32)
    masks = ((index[:, None] >> bits) & 1).astype(bool)                    # [c, d]
    values = _loop.call_game(game, masks, dtype)                           # [c, k]
    size = masks.sum(1)
    zf = masks.astype(dtype)
    plus = zf.T @ (values * jnp.asarray(w_in, dtype)[size][:, None])
    minus = (1 - zf).T @ (values * jnp.asarray(w_out, dtype)[size][:, None])
    return plus - minus, jnp.all(jnp.isfinite(values))

  starts = jnp.arange(0, total, chunk, dtype=jnp.uint32)
  parts, finite = jax.lax.map(chunk_contribution, starts)
  return parts.sum(0), finite.all()
